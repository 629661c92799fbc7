"""Moderation seen through upstream Troop 0.10.3's own client code (its hub client, Sender,
message classes and message reader, imported from TROOP_UPSTREAM; nothing of Troop's is copied
here). Run by tests/upstream_moderation.rs with Python 3.10:

    moderation.py HUB_HOST HUB_PORT SESSION PASSWORD HTTP_ADDR

Two performers (alice, bob) find the session through the hub as `run-client.py --hub` does and
join; the owner locks the session and removes bob over the hub's HTTP API. Bob must receive
MSG_KILL with the hub's sentence (what Troop's interface shows in its console before it stops),
must be refused while the lock holds with Troop's own sentence for it, and alice must keep
playing. Prints one JSON line of what it saw; exits non-zero on the first thing that is wrong.
"""
import json
import os
import socket
import sys
import time
import urllib.request
from urllib.parse import quote

sys.path.insert(0, os.environ["TROOP_UPSTREAM"])

from src.config import VERSION  # noqa: E402
from src.hub import HubClient, HubParser  # noqa: E402
from src.message import (MSG_CONNECT, MSG_CONNECT_ACK, MSG_CONSOLE, MSG_KILL,  # noqa: E402
                         MSG_REMOVE, NetworkMessageReader)
from src.sender import Sender  # noqa: E402

host, hub_port, session, password, http = sys.argv[1:6]
DEADLINE = 15.0


class Performer:
    """What upstream's Client keeps for its Sender (its version, whether it is alive)."""
    version = VERSION
    is_alive = True

    def __init__(self, name):
        hub = HubParser("{}@{}:{}".format(session, host, hub_port))
        address = HubClient(**hub).query(hub.get("name"))
        self.name = name
        self.send = Sender(self).connect(address[0], address[1], name, False, password)
        if not self.send.connected:
            raise SystemExit("{} could not join: {}".format(name, self.send.error_message()))
        self.id = self.send.conn_id
        self.reader = NetworkMessageReader()
        self.send(MSG_CONNECT(self.id, name, address[0], address[1], True))
        self.send.conn.settimeout(0.2)
        self.closed = False

    def read(self):
        """Messages that arrived (acknowledging joins, as upstream's client does)."""
        try:
            data = self.send.conn.recv(65536)
        except socket.timeout:
            return []
        if not data:
            self.closed = True
            return []
        msgs = self.reader.feed(data)
        for m in msgs:
            if isinstance(m, MSG_CONNECT_ACK) or type(m).__name__ == "MSG_REQUEST_ACK":
                self.send(MSG_CONNECT_ACK(self.id))
        return msgs

    def until(self, what, test):
        end = time.time() + DEADLINE
        seen = []
        while time.time() < end:
            for m in self.read():
                seen.append(m)
                if test(m):
                    return m, seen
            if self.closed:
                break
        raise SystemExit("{} never saw {} (saw {}, closed: {})".format(self.name, what, [type(m).__name__ for m in seen], self.closed))


def owner(method, path, body=None):
    req = urllib.request.Request("http://{}{}".format(http, path), method=method,
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json",
                                          "X-Session-Password": "utf-8''" + quote(password, safe="")})
    with urllib.request.urlopen(req, timeout=DEADLINE) as r:
        return json.loads(r.read() or b"{}")


alice = Performer("alice")
bob = Performer("bob")
# Bob's join holds the session until every performer acknowledges it (upstream's barrier):
# both read up to the RESET that lifts it, acknowledging as Troop's client does.
waiting = {alice.name: alice, bob.name: bob}
end = time.time() + DEADLINE
while waiting and time.time() < end:
    for p in list(waiting.values()):
        if any(type(m).__name__ == "MSG_RESET" for m in p.read()):
            del waiting[p.name]
if waiting:
    raise SystemExit("bob's join never settled for {}".format(sorted(waiting)))
# Both settled: alice greets through the server and bob hears it.
alice.send(MSG_CONSOLE(alice.id, "hello from alice"))
bob.until("alice's hello", lambda m: isinstance(m, MSG_CONSOLE) and m["string"] == "hello from alice")

locked = owner("POST", "/api/v1/sessions/{}/lock".format(session), {"locked": True})
removed = owner("DELETE", "/api/v1/sessions/{}/performers/bob".format(session), {"reason": "please rest"})
kill, _ = bob.until("MSG_KILL", lambda m: isinstance(m, MSG_KILL))
end = time.time() + DEADLINE
while not bob.closed and time.time() < end:
    bob.read()
if not bob.closed:
    raise SystemExit("bob's connection stayed open after MSG_KILL")
alice.until("bob's REMOVE", lambda m: isinstance(m, MSG_REMOVE) and m["src_id"] == bob.id)

try:
    Performer("bob")
    refused = None
except SystemExit as e:
    refused = str(e)

# Alice keeps playing: her console line still goes round (to herself, as upstream relays it).
alice.send(MSG_CONSOLE(alice.id, "still playing"))
alice.until("her own line back", lambda m: isinstance(m, MSG_CONSOLE) and m["string"] == "still playing")

print(json.dumps({"locked": locked.get("locked"), "removed": removed.get("clients"),
                  "sentence": kill["string"], "kill_src": kill["src_id"], "rejoin": refused}))
