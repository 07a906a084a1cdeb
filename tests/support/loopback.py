"""A servicer served over real loopback gRPC, the way every service test starts one: 127.0.0.1, a free port, no
metrics port, one token.

    with loopback_server("rnn", servicers(RnnServicer(store)), [SERVICE_NAME], TOKEN) as srv:
        client = RnnClient(f"127.0.0.1:{srv.port}", token=TOKEN)
    srv = loopback_server(...).start()                    # in a module fixture; srv.stop() at its end
"""

from __future__ import annotations

from smf.common.server import ServerThread


def loopback_server(name: str, servicers: list, service_names: list[str], token: str) -> ServerThread:
    """A ServerThread not yet started: `.start()` it, or use it as a context manager."""
    return ServerThread(
        name=name,
        servicers=servicers,
        service_names=service_names,
        port=0,
        metrics_port=None,
        token=token,
        host="127.0.0.1",
    )
