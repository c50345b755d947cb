"""Writes tests/reference/fp8/conversions.txt: what the ml_dtypes library
(the float8 types of JAX and NumPy) decodes every FP8 code to, and which code
it rounds a float32 to, for E4M3 (float8_e4m3fn) and E5M2 (float8_e5m2).
The inputs are every code's value, the midpoints between neighbouring codes
(ties, which round to even), one float32 step either side of each midpoint,
float32 subnormals and random values over the whole range, all within the
largest finite value (ml_dtypes gives NaN or inf beyond it where moe_train
saturates, a rule its own test checks). Run by hand; CI reads the file.

    python3 -m venv /tmp/fp8venv && /tmp/fp8venv/bin/pip install -r dev/fp8_reference/requirements.txt
    /tmp/fp8venv/bin/python dev/fp8_reference/make_reference.py
"""
import os

import ml_dtypes
import numpy as np

FORMATS = {"e4m3": ml_dtypes.float8_e4m3fn, "e5m2": ml_dtypes.float8_e5m2}
OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "reference", "fp8", "conversions.txt")


def bits(x):
    return int(np.float32(x).view(np.uint32))


def main():
    rng = np.random.default_rng(8)
    lines = ["# format kind input output (see dev/fp8_reference/make_reference.py)",
             "# decode <code> <float32 bits of the value, or nan>; encode <float32 bits> <code>"]
    for name, dtype in FORMATS.items():
        codes = np.arange(256, dtype=np.uint8)
        values = codes.view(dtype).astype(np.float32)
        for c, v in zip(codes, values):
            lines.append(f"{name} decode {c:02x} {'nan' if np.isnan(v) else format(bits(v), '08x')}")
        largest = float(ml_dtypes.finfo(dtype).max)
        finite = np.unique(values[np.isfinite(values) & (values >= 0)])
        inputs = list(finite)
        mids = (finite[:-1].astype(np.float64) + finite[1:]) / 2
        for m in mids.astype(np.float32):
            inputs += [m, np.nextafter(m, np.float32(0)), np.nextafter(m, np.float32(np.inf))]
        inputs += [np.float32(1e-45), np.float32(3e-39), np.float32(1e-30)]
        inputs += list(np.exp(rng.uniform(np.log(1e-8), np.log(largest), 600)).astype(np.float32))
        for x in inputs:
            x = np.float32(x)
            if x > largest:
                continue
            for signed in (x, -x):
                code = int(np.array([signed], dtype=np.float32).astype(dtype).view(np.uint8)[0])
                lines.append(f"{name} encode {bits(signed):08x} {code:02x}")
    with open(OUT, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {len(lines)} lines to {os.path.normpath(OUT)}")


if __name__ == "__main__":
    main()
