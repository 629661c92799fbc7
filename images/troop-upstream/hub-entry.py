"""Runs upstream Troop 0.10.3's server the way troop-hub runs its sessions.

- --port PORT, --idle-exit DURATION (e.g. 600000ms, 10m, 30s): as troop-server takes them.
- TROOP_PASSWORD_MD5: the md5 hex of the password (the hub never passes the plaintext).
  Upstream compares clients' digests with md5(password).hexdigest(); this wrapper hands it an
  object whose hexdigest() is the given digest, so the plaintext is never needed.
- SIGTERM behaves like upstream's Ctrl-C: every client gets MSG_KILL, then the process exits.
"""
import argparse
import os
import re
import signal
import sys
import threading
import time

sys.path.insert(0, "/opt/troop")


class Digest:
    def __init__(self, hexdigest):
        self._hex = hexdigest

    def hexdigest(self):
        return self._hex


def duration(text):
    m = re.fullmatch(r"(\d+)(ms|s|m|h)?", text.strip())
    if not m:
        raise argparse.ArgumentTypeError("not a duration: %r" % text)
    scale = {"ms": 0.001, "s": 1, None: 1, "m": 60, "h": 3600}[m.group(2)]
    return int(m.group(1)) * scale


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=57890)
    parser.add_argument("--idle-exit", type=duration, default=None)
    args, _ = parser.parse_known_args()

    digest = os.environ.get("TROOP_PASSWORD_MD5", "")
    if not digest and os.environ.get("TROOP_CONTROL_SECRET"):
        sys.exit("upstream Troop has no control channel: set control_channel: false in the hub's hub.yaml")
    if not re.fullmatch(r"[0-9a-f]{32}", digest):
        sys.exit("TROOP_PASSWORD_MD5 must be 32 lowercase hex digits")

    from src.server import TroopServer

    server = TroopServer(password="", port=args.port)
    server.password = Digest(digest)

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)

    if args.idle_exit:
        def reaper():
            idle_since = time.time()
            while True:
                time.sleep(1)
                if any(c.connected for c in list(server.clients.values())):
                    idle_since = time.time()
                elif time.time() - idle_since >= args.idle_exit:
                    os._exit(0)
        threading.Thread(target=reaper, daemon=True).start()

    server.start()
    os._exit(0)


if __name__ == "__main__":
    main()
