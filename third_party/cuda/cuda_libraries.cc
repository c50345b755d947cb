#include "third_party/cuda/cuda_libraries.h"

#include <cublasLt.h>
#if MOE_TRAIN_HAS_CUDNN
#include <cudnn.h>
#endif
#include <dlfcn.h>
#include <link.h>
#include <nccl.h>

#include <algorithm>
#include <cstdlib>
#include <mutex>
#include <stdexcept>
#include <vector>

namespace moe::cuda_libraries {
namespace {

struct Library {
  std::string soname;    // "libcublasLt.so.13"
  const char* home_env;  // a second *_HOME variable to look in, or null
  void* handle = nullptr;
  std::string path, error;  // where it was found; or why not
};

std::vector<std::string> candidates(const Library& lib) {
  std::vector<std::string> out;
  for (const char* env : {"CUDA_HOME", lib.home_env}) {
    const char* dir = env ? std::getenv(env) : nullptr;
    if (dir && *dir) {
      out.push_back(std::string(dir) + "/lib64/" + lib.soname);
      out.push_back(std::string(dir) + "/lib/" + lib.soname);
    }
  }
  out.push_back(lib.soname);  // the loader's search: LD_LIBRARY_PATH, RUNPATH, ldconfig
  // Last, the toolkit's default place. Nothing of the build machine is baked in.
  out.push_back("/usr/local/cuda/lib64/" + lib.soname);
  std::vector<std::string> unique;
  for (const std::string& c : out)
    if (std::find(unique.begin(), unique.end(), c) == unique.end()) unique.push_back(c);
  return unique;
}

void open(Library& lib) {
  std::string tried;
  for (const std::string& c : candidates(lib)) {
    lib.handle = dlopen(c.c_str(), RTLD_NOW | RTLD_GLOBAL);
    if (lib.handle != nullptr) {
      link_map* map = nullptr;
      lib.path = dlinfo(lib.handle, RTLD_DI_LINKMAP, &map) == 0 && map ? map->l_name : c;
      return;
    }
    tried += (tried.empty() ? "" : ", ") + c;
  }
  lib.error = lib.soname + " not found (looked for " + tried + ")";
}

Library& cublaslt() {
  static Library lib{"libcublasLt.so." + std::to_string(CUBLAS_VER_MAJOR), nullptr};
  return lib;
}
Library& nccl() {
  static Library lib{"libnccl.so." + std::to_string(NCCL_MAJOR), "NCCL_HOME"};
  return lib;
}

std::once_flag opened;
void open_all() {
  std::call_once(opened, [] {
    open(cublaslt());
    open(nccl());
  });
}

// The library's `name`, or an exception naming what is missing (callers
// reach here only after load() said yes, except through a bug).
void* symbol(Library& lib, const char* name) {
  open_all();  // cuBLASLt and NCCL; cuDNN's accessor opens it
  if (lib.handle == nullptr) throw std::runtime_error("CUDA library: " + lib.error);
  void* fn = dlsym(lib.handle, name);
  if (fn == nullptr) throw std::runtime_error("CUDA library: " + lib.path + " has no " + name + " (too old?)");
  return fn;
}

}  // namespace

std::string load() {
  open_all();
  std::string missing;
  for (Library* lib : {&cublaslt(), &nccl()}) {
    if (lib->handle == nullptr) missing += (missing.empty() ? "" : "; ") + lib->error;
  }
  if (missing.empty()) return "";
  return missing + ": install the CUDA " + std::to_string(CUBLAS_VER_MAJOR) +
         " libraries (cuBLAS and NCCL) or load their module, "
         "and set CUDA_HOME (NCCL_HOME) or LD_LIBRARY_PATH to their folder";
}

namespace {
// cuDNN 9 is opened on first use only: no CPU run and no fp32 GPU run needs it.
Library& cudnn() {
  static Library lib{"libcudnn.so.9", "CUDNN_HOME"};
  static std::once_flag tried;
  std::call_once(tried, [] { open(lib); });
  return lib;
}
}  // namespace

int64_t cudnn_version() {
  // cuDNN 9's version number is major * 10000 + minor * 100 + patch.
  if (cudnn().handle == nullptr) return 0;
  using GetVersion = size_t (*)();
  const auto get_version = reinterpret_cast<GetVersion>(dlsym(cudnn().handle, "cudnnGetVersion"));
  return get_version == nullptr ? 0 : static_cast<int64_t>(get_version());
}

std::string cudnn_found() {
  const int64_t v = cudnn_version();
  if (v == 0) return "none";
  return std::to_string(v / 10000) + "." + std::to_string(v / 100 % 100) + "." + std::to_string(v % 100) + " (" +
         cudnn().path + ")";
}

std::string cublaslt_path() { return cublaslt().path; }
std::string nccl_path() { return nccl().path; }

}  // namespace moe::cuda_libraries

// Each function resolves its library's symbol once and forwards to it.
#define LT(name, args)                                                                                        \
  static const auto fn =                                                                                      \
      reinterpret_cast<decltype(&name)>(moe::cuda_libraries::symbol(moe::cuda_libraries::cublaslt(), #name)); \
  return fn args;
#define NC(name, args)                                                                                    \
  static const auto fn =                                                                                  \
      reinterpret_cast<decltype(&name)>(moe::cuda_libraries::symbol(moe::cuda_libraries::nccl(), #name)); \
  return fn args;

// ---- cuBLASLt -----------------------------------------------------------------
cublasStatus_t CUBLASWINAPI cublasLtCreate(cublasLtHandle_t* h) { LT(cublasLtCreate, (h)) }
const char* CUBLASWINAPI cublasLtGetStatusName(cublasStatus_t s) { LT(cublasLtGetStatusName, (s)) }
const char* CUBLASWINAPI cublasLtGetStatusString(cublasStatus_t s){LT(cublasLtGetStatusString, (s))} size_t CUBLASWINAPI
    cublasLtGetVersion(void){LT(cublasLtGetVersion, ())} cublasStatus_t CUBLASWINAPI
    cublasLtMatmul(cublasLtHandle_t h, cublasLtMatmulDesc_t d, const void* alpha, const void* A,
                   cublasLtMatrixLayout_t Ad, const void* B, cublasLtMatrixLayout_t Bd, const void* beta, const void* C,
                   cublasLtMatrixLayout_t Cd, void* D, cublasLtMatrixLayout_t Dd, const cublasLtMatmulAlgo_t* algo,
                   void* ws, size_t ws_bytes,
                   cudaStream_t stream){LT(cublasLtMatmul, (h, d, alpha, A, Ad, B, Bd, beta, C, Cd, D, Dd, algo, ws,
                                                            ws_bytes, stream))} cublasStatus_t CUBLASWINAPI
    cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t h, cublasLtMatmulDesc_t d, cublasLtMatrixLayout_t A,
                                   cublasLtMatrixLayout_t B, cublasLtMatrixLayout_t C, cublasLtMatrixLayout_t D,
                                   cublasLtMatmulPreference_t p, int requested,
                                   cublasLtMatmulHeuristicResult_t results[], int* returned){
        LT(cublasLtMatmulAlgoGetHeuristic,
           (h, d, A, B, C, D, p, requested, results, returned))} cublasStatus_t CUBLASWINAPI
    cublasLtMatmulDescCreate(cublasLtMatmulDesc_t* d, cublasComputeType_t c,
                             cudaDataType_t s){LT(cublasLtMatmulDescCreate, (d, c, s))} cublasStatus_t CUBLASWINAPI
    cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t a, const void* buf,
                                   size_t bytes){
        LT(cublasLtMatmulDescSetAttribute, (d, a, buf, bytes))} cublasStatus_t CUBLASWINAPI
    cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t* p){
        LT(cublasLtMatmulPreferenceCreate, (p))} cublasStatus_t CUBLASWINAPI
    cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t p){
        LT(cublasLtMatmulPreferenceDestroy, (p))} cublasStatus_t CUBLASWINAPI
    cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t p, cublasLtMatmulPreferenceAttributes_t a,
                                         const void* buf, size_t bytes){
        LT(cublasLtMatmulPreferenceSetAttribute, (p, a, buf, bytes))} cublasStatus_t CUBLASWINAPI
    cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t* l, cudaDataType t, uint64_t rows, uint64_t cols,
                               int64_t ld){LT(cublasLtMatrixLayoutCreate, (l, t, rows, cols, ld))}

// ---- NCCL ---------------------------------------------------------------------
ncclResult_t ncclAllGather(const void* send, void* recv, size_t count, ncclDataType_t t, ncclComm_t comm,
                           cudaStream_t s){NC(ncclAllGather, (send, recv, count, t, comm, s))} ncclResult_t
    ncclAllReduce(const void* send, void* recv, size_t count, ncclDataType_t t, ncclRedOp_t op, ncclComm_t comm,
                  cudaStream_t s){NC(ncclAllReduce, (send, recv, count, t, op, comm, s))} ncclResult_t
    ncclBroadcast(const void* send, void* recv, size_t count, ncclDataType_t t, int root, ncclComm_t comm,
                  cudaStream_t s){NC(ncclBroadcast, (send, recv, count, t, root, comm, s))} ncclResult_t
    ncclReduceScatter(const void* send, void* recv, size_t count, ncclDataType_t t, ncclRedOp_t op, ncclComm_t comm,
                      cudaStream_t s){NC(ncclReduceScatter, (send, recv, count, t, op, comm, s))} ncclResult_t
    ncclSend(const void* send, size_t count, ncclDataType_t t, int peer, ncclComm_t comm,
             cudaStream_t s){NC(ncclSend, (send, count, t, peer, comm, s))} ncclResult_t
    ncclRecv(void* recv, size_t count, ncclDataType_t t, int peer, ncclComm_t comm,
             cudaStream_t s){NC(ncclRecv, (recv, count, t, peer, comm, s))} ncclResult_t
    ncclCommAbort(ncclComm_t comm){NC(ncclCommAbort, (comm))} ncclResult_t
    ncclCommDestroy(ncclComm_t comm){NC(ncclCommDestroy, (comm))} ncclResult_t
    ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t* e){NC(ncclCommGetAsyncError, (comm, e))} ncclResult_t
    ncclCommInitRank(ncclComm_t* comm, int nranks, ncclUniqueId id, int rank) {
  NC(ncclCommInitRank, (comm, nranks, id, rank))
}
const char* ncclGetErrorString(ncclResult_t r) { NC(ncclGetErrorString, (r)) }
const char* ncclGetLastError(ncclComm_t comm){NC(ncclGetLastError, (comm))} ncclResult_t
    ncclGetUniqueId(ncclUniqueId* id){NC(ncclGetUniqueId, (id))} ncclResult_t
    ncclGetVersion(int* version){NC(ncclGetVersion, (version))} ncclResult_t
    ncclGroupEnd(){NC(ncclGroupEnd, ())} ncclResult_t ncclGroupStart() {
  NC(ncclGroupStart, ())
}

// ---- cuDNN (the calls of cuDNN's frontend, src/kernels/cuda/cudnn_attention.cc) ----
// Only where the build found cuDNN's headers; without them the attention path
// is not compiled and nothing calls these.
#if MOE_TRAIN_HAS_CUDNN
#define DNN(name, args)                                                                                    \
  static const auto fn =                                                                                   \
      reinterpret_cast<decltype(&name)>(moe::cuda_libraries::symbol(moe::cuda_libraries::cudnn(), #name)); \
  return fn args
cudnnStatus_t cudnnCreate(cudnnHandle_t* h) { DNN(cudnnCreate, (h)); }
cudnnStatus_t cudnnSetStream(cudnnHandle_t h, cudaStream_t s) { DNN(cudnnSetStream, (h, s)); }
cudnnStatus_t cudnnGetStream(cudnnHandle_t h, cudaStream_t* s) { DNN(cudnnGetStream, (h, s)); }
size_t cudnnGetVersion() { DNN(cudnnGetVersion, ()); }
const char* cudnnGetErrorString(cudnnStatus_t s) { DNN(cudnnGetErrorString, (s)); }
void cudnnGetLastErrorString(char* message, size_t max_size) { DNN(cudnnGetLastErrorString, (message, max_size)); }
cudnnStatus_t cudnnBackendCreateDescriptor(cudnnBackendDescriptorType_t type, cudnnBackendDescriptor_t* d) {
  DNN(cudnnBackendCreateDescriptor, (type, d));
}
cudnnStatus_t cudnnBackendDestroyDescriptor(cudnnBackendDescriptor_t d) { DNN(cudnnBackendDestroyDescriptor, (d)); }
cudnnStatus_t cudnnBackendFinalize(cudnnBackendDescriptor_t d) { DNN(cudnnBackendFinalize, (d)); }
cudnnStatus_t cudnnBackendSetAttribute(cudnnBackendDescriptor_t d, cudnnBackendAttributeName_t name,
                                       cudnnBackendAttributeType_t type, int64_t count, const void* values) {
  DNN(cudnnBackendSetAttribute, (d, name, type, count, values));
}
cudnnStatus_t cudnnBackendGetAttribute(cudnnBackendDescriptor_t const d, cudnnBackendAttributeName_t name,
                                       cudnnBackendAttributeType_t type, int64_t requested, int64_t* count,
                                       void* values) {
  DNN(cudnnBackendGetAttribute, (d, name, type, requested, count, values));
}
cudnnStatus_t cudnnBackendExecute(cudnnHandle_t h, cudnnBackendDescriptor_t plan, cudnnBackendDescriptor_t pack) {
  DNN(cudnnBackendExecute, (h, plan, pack));
}
#endif  // MOE_TRAIN_HAS_CUDNN
