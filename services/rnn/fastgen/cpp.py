"""The compiled backend: builds kernel.cpp on first use, caches it, and runs it through ctypes.

Nothing is compiled at import. `load_kernel()` compiles once per (source, compiler, flags, CPU) into
`$SMF_CACHE_DIR/fastgen` (default ~/.cache/smf/fastgen), first with `-march=native`, then portable; if no compiler
works it warns and returns None, and callers fall back to the pure-torch loop. `SMF_FASTGEN=0` disables it.
Pre-build (e.g. in an image): `python -m smf.rnn.fastgen.cpp`.

A plain shared library rather than a torch extension: no torch headers to compile (seconds, not a minute), no
ABI coupling to the torch build, and ctypes releases the GIL while the loop runs (the server keeps serving).

    engine = CppEngine(model, precision="int8")
    audio = engine.run(cond, u, h, prev, hist, temperature=1.0)  # [B, T] float32; h, prev, hist updated in place

int8 runs on AVX-512 VNNI where the CPU has it (chosen at run time by cpuid, so one build serves any x86 CPU)
and on a portable path otherwise; both give identical samples. `SMF_FASTGEN_ISA=portable` forces the portable path.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import torch
from smf.common.files import atomic_path
from smf.rnn.fastgen.quant import PRECISIONS, quantize
from smf.rnn.model import decode_audio
from torch import Tensor, nn

TILE = 64  # rows per packed output tile; must match kernel.cpp
UNITS = 16  # hidden units per packed GRU block (48 rows: r, z, n); must match kernel.cpp
_SOURCE = Path(__file__).with_name("kernel.cpp")
_FLAG_SETS = (["-O3", "-march=native"], ["-O3"])
_COMMON = ["-std=c++17", "-shared", "-fPIC", "-pthread", "-ffp-contract=off", "-fno-math-errno"]

_lock = threading.Lock()
_kernel: ctypes.CDLL | None = None
_tried = False
_error: str | None = None


def cache_dir() -> Path:
    root = os.environ.get("SMF_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "smf")
    return Path(root) / "fastgen"


def _cpu_id() -> str:
    # a -march=native build is only valid on the CPU it was built for; key the cache on the CPU's flags
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line
    except OSError:
        pass
    return sys.platform


def _build(cxx: str, flags: list[str]) -> Path:
    src = _SOURCE.read_bytes()
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30, check=False).stdout
    key = hashlib.sha256(
        src + repr((cxx, version, flags, _COMMON)).encode() + (_cpu_id().encode() if "-march=native" in flags else b"")
    ).hexdigest()[:16]
    out = cache_dir() / f"kernel-{key}.so"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:  # atomic: a concurrent builder never loads a half-written library
        proc = subprocess.run(
            [cxx, *flags, *_COMMON, str(_SOURCE), "-o", tmp], capture_output=True, text=True, timeout=300, check=False
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{cxx} {' '.join(flags)} failed:\n{proc.stderr[-2000:]}")
    return out


def _bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    p, i, f = ctypes.c_void_p, ctypes.c_int, ctypes.c_float
    lib.smf_fastgen_abi.restype = i
    lib.smf_fastgen_run.restype = i
    lib.smf_fastgen_isa.restype = i
    lib.smf_fastgen_run.argtypes = [
        i,
        i,
        i,
        i,
        i,
        i,
        i,
        i,
        p,
        p,
        p,
        p,
        p,
        p,
        p,
        p,
        p,
        p,
        p,
        p,
        p,
        p,
        p,
        i,
        i,
        p,
        p,
        p,
        p,
        f,
        p,
        i,
        p,
        p,
        p,
    ]
    if lib.smf_fastgen_abi() != 5:
        raise RuntimeError("kernel ABI mismatch")
    return lib


def load_kernel() -> ctypes.CDLL | None:
    """The compiled kernel, building it on first call; None (after one warning) when it cannot be built."""
    global _kernel, _tried, _error
    with _lock:
        if _tried:
            return _kernel
        _tried = True
        if os.environ.get("SMF_FASTGEN", "1") == "0":
            _error = "disabled by SMF_FASTGEN=0"
            return None
        cxx = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
        errors = []
        if cxx is None:
            errors.append("no C++ compiler found (set CXX or install g++)")
        else:
            for flags in _FLAG_SETS:
                try:
                    _kernel = _bind(ctypes.CDLL(str(_build(cxx, flags))))
                    return _kernel
                except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                    errors.append(str(exc))
        _error = "; ".join(errors)
        warnings.warn(
            f"smf.rnn fast generation kernel unavailable, using the pure-torch loop: {_error}",
            RuntimeWarning,
            stacklevel=2,
        )
        return None


def kernel_error() -> str | None:
    return _error


def _pad_rows(w: Tensor, rows: int) -> Tensor:
    return torch.cat([w, w.new_zeros(rows - w.shape[0], *w.shape[1:])]) if rows > w.shape[0] else w


ISAS = ("portable", "vnni")  # index = the kernel's ISA_* code


def _vnni_k(q: Tensor, Hp: int) -> Tensor:
    """[..., rows, K] int8 -> [..., Hp/4, rows, 4]: K padded to Hp; 4 consecutive k of 16 rows: one vpdpbusd operand."""
    q = torch.cat([q, q.new_zeros(*q.shape[:-1], Hp - q.shape[-1])], -1) if Hp > q.shape[-1] else q
    return q.reshape(*q.shape[:-1], Hp // 4, 4).transpose(-3, -2).contiguous()


def _rowsum128(q: Tensor) -> Tensor:
    """128 * sum_k q[..., r, k] as int32: takes the u8 zero point of the activations back out (kernel.cpp)."""
    return (q.to(torch.int32).sum(-1) * 128).to(torch.int32).contiguous()


def _pack(w: Tensor, precision: str, isa: str, Hp: int) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Output layer [R, K] -> row tiles [R'/64, K, 64] (R' = R padded to 64) in the stored format (int8 on VNNI:
    [R'/64, Hp/4, 64, 4]), plus the padded row scale and, for VNNI, the row corrections."""
    q, scale = quantize(w, precision)
    rows = -(-q.shape[0] // TILE) * TILE
    q = _pad_rows(q, rows)
    corr = None
    if precision == "int8" and isa == "vnni":
        tiles = q.reshape(rows // TILE, TILE, q.shape[1])
        packed, corr = _vnni_k(tiles, Hp), _rowsum128(tiles).reshape(-1)
    else:
        packed = q.reshape(rows // TILE, TILE, q.shape[1]).transpose(1, 2).contiguous()
    if scale is not None:
        scale = _pad_rows(scale, rows).contiguous()
    return packed, scale, corr


def _unit_blocks(v: Tensor, H: int) -> Tensor:
    """Rows of a GRU gate matrix/vector [3H, ...] -> [Hp/16, 48, ...]: per block of 16 units its r, z, n rows."""
    Hp = -(-H // UNITS) * UNITS
    g = v.reshape(3, H, *v.shape[1:])
    g = torch.cat([g, g.new_zeros(3, Hp - H, *v.shape[1:])], 1) if Hp > H else g
    g = g.reshape(3, Hp // UNITS, UNITS, *v.shape[1:]).transpose(0, 1)  # [nb, 3, 16, ...]
    return g.reshape(Hp // UNITS, 3 * UNITS, *v.shape[1:])


def _pack_gru(
    w: Tensor, b: Tensor, H: int, precision: str, isa: str
) -> tuple[Tensor, Tensor | None, Tensor, Tensor | None]:
    """GRU W [3H, K], bias [3H] -> weights [nb, K, 48] in the stored format (int8 on VNNI: [nb, Hp/4, 48, 4]),
    scale [nb, 48] or None, bias [nb, 48], and for VNNI the row corrections [nb, 48]."""
    q, scale = quantize(w, precision)
    blocks = _unit_blocks(q, H)  # [nb, 48, K]
    corr = None
    if precision == "int8" and isa == "vnni":
        packed, corr = _vnni_k(blocks, blocks.shape[0] * UNITS), _rowsum128(blocks)
    else:
        packed = blocks.transpose(1, 2).contiguous()
    scale = _unit_blocks(scale, H).contiguous() if scale is not None else None
    return packed, scale, _unit_blocks(b.detach().float(), H).contiguous(), corr


class CppEngine:
    """An AudioTier's weights packed for the kernel; `run` generates T steps for B voices on the CPU."""

    def __init__(
        self,
        model: nn.Module,
        *,
        precision: str = "fp32",
        threads: int | None = None,
        split: bool = False,
        isa: str | None = None,
    ):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        lib = load_kernel()
        if lib is None:
            raise RuntimeError(f"fast kernel unavailable: {kernel_error()}")
        self._lib = lib
        best = ISAS[lib.smf_fastgen_isa()]
        isa = isa or os.environ.get("SMF_FASTGEN_ISA") or best
        if isa not in ISAS:
            raise ValueError(f"isa must be one of {ISAS}, got {isa!r}")
        if ISAS.index(isa) > ISAS.index(best):
            raise RuntimeError(f"isa {isa!r} is not supported by this CPU (best: {best!r})")
        self.isa = isa if precision == "int8" else "portable"  # only the int8 net has ISA-specific code
        cfg = model.config
        self.precision = precision
        self.threads = threads or max(1, torch.get_num_threads())
        self.split = split  # several threads per voice when voices < threads (needs idle cores; see kernel.cpp)
        self.H, self.L, self.C, self.Q = cfg.hidden, cfg.layers, cfg.net_cond_size, cfg.classes
        self.params = cfg.cond_size  # the envelope's input: the params (without a pitch oscillator's columns)
        with torch.no_grad():
            w = model.inp.weight.detach().float().cpu()
            G = cfg.gen_size  # 1, or 3 for a source-filter tier (w_a is then [3, H])
            self.order = cfg.lpc
            self.preemphasis = cfg.preemphasis
            self.envelope = model.envelope if cfg.lpc else None
            self._w_a = w[:, :G].t().contiguous()
            self._w_c = w[:, G:].t().contiguous()  # [C, H]
            self._b_inp = model.inp.bias.detach().float().cpu().contiguous()
            keep = [self._w_a, self._w_c, self._b_inp]
            arrays = {k: [] for k in ("w_ih", "s_ih", "b_ih", "c_ih", "w_hh", "s_hh", "b_hh", "c_hh")}
            Hp = -(-self.H // UNITS) * UNITS
            for i in range(self.L):
                for kind in ("ih", "hh"):
                    wq, s, b, c = _pack_gru(
                        getattr(model.gru, f"weight_{kind}_l{i}").cpu(),
                        getattr(model.gru, f"bias_{kind}_l{i}").cpu(),
                        self.H,
                        precision,
                        self.isa,
                    )
                    keep += [t for t in (wq, b, s, c) if t is not None]
                    for name, t in (("w", wq), ("s", s), ("b", b), ("c", c)):
                        arrays[f"{name}_{kind}"].append(t.data_ptr() if t is not None else None)
            self._w_out, s_out, self._c_out = _pack(model.out.weight.cpu(), precision, self.isa, Hp)
            Qp = self._w_out.shape[0] * TILE
            self._b_out = _pad_rows(model.out.bias.detach().float().cpu(), Qp).contiguous()
            self._s_out = s_out
            keep += [t for t in (self._w_out, self._b_out, s_out, self._c_out) if t is not None]
        self._keep = keep  # the kernel holds raw pointers into these
        self._ptrs = {k: (ctypes.c_void_p * self.L)(*v) for k, v in arrays.items()}

    def run(self, cond: Tensor, u: Tensor, h: Tensor, prev: Tensor, hist: Tensor, temperature: float) -> Tensor:
        """cond [B, T, C] float32, u [B, T] float32, h [L, B, H] float32 (updated), prev [B] int64 (updated), hist
        [B, config.history] float32 (the last samples, newest first; updated) -> audio [B, T] float32. All CPU and
        contiguous. As StepLoop: a source-filter tier's samples come out of the loop, any other's classes are
        decoded (and de-emphasised from hist[:, 0]) after it."""
        B, T = u.shape
        cond = cond.detach().to(torch.float32).contiguous()
        u = u.contiguous()
        assert h.is_contiguous() and h.dtype == torch.float32 and prev.is_contiguous() and prev.dtype == torch.int64
        assert hist.is_contiguous() and hist.dtype == torch.float32
        out = torch.empty(B, T, dtype=torch.int64)
        lpc = audio = None
        if self.order:
            with torch.no_grad():
                lpc = self.envelope(cond[:, :, : self.params]).float().contiguous()
            audio = torch.empty(B, T, dtype=torch.float32)
        P = self._ptrs
        rc = self._lib.smf_fastgen_run(
            PRECISIONS.index(self.precision),
            ISAS.index(self.isa),
            self.threads,
            int(self.split),
            self.H,
            self.L,
            self.C,
            self.Q,
            self._w_a.data_ptr(),
            self._w_c.data_ptr(),
            self._b_inp.data_ptr(),
            P["w_ih"],
            P["s_ih"],
            P["b_ih"],
            P["c_ih"],
            P["w_hh"],
            P["s_hh"],
            P["b_hh"],
            P["c_hh"],
            self._w_out.data_ptr(),
            self._s_out.data_ptr() if self._s_out is not None else None,
            self._b_out.data_ptr(),
            self._c_out.data_ptr() if self._c_out is not None else None,
            B,
            T,
            cond.data_ptr(),
            u.data_ptr(),
            h.data_ptr(),
            prev.data_ptr(),
            float(temperature),
            out.data_ptr(),
            self.order,
            lpc.data_ptr() if lpc is not None else None,
            hist.data_ptr() if self.order else None,
            audio.data_ptr() if audio is not None else None,
        )
        if rc != 0:
            raise RuntimeError(f"fast kernel returned {rc}")
        if audio is not None:
            return audio
        audio = decode_audio(out, self.Q, self.preemphasis, hist[:, 0])
        if T:
            hist[:, 0] = audio[:, -1]
        return audio


if __name__ == "__main__":  # pre-build: python -m smf.rnn.fastgen.cpp
    lib = load_kernel()
    print("fast kernel:", "ok" if lib is not None else f"unavailable ({kernel_error()})")
    sys.exit(0 if lib is not None else 1)
