"""A TCP proxy in front of moto's S3 server that can lose the answer to a write the server committed.

Bytes are relayed both ways. When `lose_answer_to` is set, the first request
whose request line contains it is forwarded, the server's answer is read and
thrown away, and the client's connection is closed: the write happened, the
client saw a reset. That is the "lost acknowledgement" a ledger must survive.
"""

from __future__ import annotations

import contextlib
import socket
import threading


class LosingProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.lose_answer_to: bytes | None = None
        self.lost = 0
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            doomed = threading.Event()
            threading.Thread(target=self._requests, args=(client, upstream, doomed), daemon=True).start()
            threading.Thread(target=self._answers, args=(upstream, client, doomed), daemon=True).start()

    def _requests(self, client: socket.socket, upstream: socket.socket, doomed: threading.Event) -> None:
        try:
            while data := client.recv(65536):
                target = self.lose_answer_to
                if target is not None and target in data.split(b"\r\n", 1)[0]:
                    self.lose_answer_to = None
                    doomed.set()
                upstream.sendall(data)
        except OSError:
            pass

    def _answers(self, upstream: socket.socket, client: socket.socket, doomed: threading.Event) -> None:
        try:
            while data := upstream.recv(65536):
                if doomed.is_set():
                    self.lost += 1
                    break  # the server answered; the client never hears it
                client.sendall(data)
        except OSError:
            pass
        for s in (client, upstream):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def close(self) -> None:
        self.server.close()
