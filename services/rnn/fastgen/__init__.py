"""Fast sample-by-sample generation for the audio tier (used by smf.rnn.generate; not a public API).

- rng.py        counter-based uniforms u(seed, voice, step): one RNG path for every backend and the export
- torch_loop.py the pure-torch step loop (always available, CPU or CUDA, TorchScript-able: the export's body)
- kernel.cpp    the C++ loop (built lazily by cpp.py into ~/.cache/smf/fastgen; optional)
- cpp.py        build/cache/load the kernel, pack weights, run it
- quant.py      the kernel's weight formats (fp32, bf16, int8) and fake-quantisation for quality checks

Nothing here compiles at import time.
"""
