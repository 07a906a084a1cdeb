"""A real JACK audio server on its dummy backend (no sound card): what the live player's tests play to.

    with JackServer(rate=16000) as jack:     # jackd -d dummy; PortAudio re-initialised to see it
        device = jack.portaudio_device()     # the JACK host API's output, for sounddevice / --device
        jack.ports()                         # jack_lsp

The dummy backend runs JACK's process cycle on its own clock at `rate`, so a client that is late is late for real.
Needs Debian's jackd2 (make system-deps); `available()` says why not where it is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time


def available() -> str:
    """'' when jackd can run here, else the reason (for pytest.skip)."""
    for tool in ("jackd", "jack_lsp", "jack_rec"):
        if shutil.which(tool) is None:
            return f"no {tool}: install jackd2 (make system-deps)"
    return ""


def reinit_portaudio() -> None:
    """PortAudio lists devices once, when it initialises (sounddevice does that at import): re-list them."""
    import sounddevice as sd

    sd._terminate()  # noqa: SLF001 - the documented way to re-scan devices (sounddevice FAQ)
    sd._initialize()


class JackServer:
    def __init__(self, *, rate: int = 16000, period: int = 256):
        self.name = f"smf-test-{os.getpid()}-{time.monotonic_ns() % 100000}"
        self.rate, self.period = rate, period
        self.saved: dict[str, str | None] = {}

    def env(self) -> dict[str, str]:
        # JACK_NO_START_SERVER: a client must never autostart a server of its own when ours is gone
        return {"JACK_DEFAULT_SERVER": self.name, "JACK_NO_START_SERVER": "1", "JACK_NO_AUDIO_RESERVATION": "1"}

    def __enter__(self) -> JackServer:
        for k, v in self.env().items():
            self.saved[k] = os.environ.get(k)
            os.environ[k] = v
        cmd = ["jackd", "-n", self.name, "-d", "dummy", "-r", str(self.rate), "-p", str(self.period)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 15
        while "system:playback_1" not in self.ports():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError(f"jackd did not start: {self.proc.stdout.read() if self.proc.stdout else ''}")
            time.sleep(0.1)
        reinit_portaudio()
        return self

    def ports(self) -> list[str]:
        out = subprocess.run(["jack_lsp"], capture_output=True, text=True, timeout=10, env={**os.environ, **self.env()})
        return out.stdout.split() if out.returncode == 0 else []

    def portaudio_device(self) -> int:
        import sounddevice as sd

        for api in sd.query_hostapis():
            if "JACK" in api["name"] and api["default_output_device"] >= 0:
                return api["default_output_device"]
        raise RuntimeError(f"PortAudio sees no JACK output: {sd.query_hostapis()}")

    def __exit__(self, *exc) -> None:
        import sounddevice as sd

        # PortAudio's JACK client first: libjack aborts the process when its server vanishes under an open client
        sd._terminate()  # noqa: SLF001
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for k, v in self.saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        sd._initialize()  # noqa: SLF001
