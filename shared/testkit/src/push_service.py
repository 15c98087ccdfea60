# A browser's push service, as far as a sender sees it (RFC 8030), on loopback for the tests:
# it holds one subscription's keys and, for each push, checks the VAPID token (RFC 8292) and
# decrypts the message with http_ece (RFC 8291) - an implementation independent of tocsin's.
# Each push is written to <dir>/<n>.json: what was decrypted, or why it was refused.
#
#   python push_service.py <port> <dir>
#
# <dir>/keys.json holds the subscription's keys (p256dh, auth; base64url) once it listens.
# A push to a path under /gone/ is answered 410, as for a subscription that ended.
import base64
import http.server
import json
import os
import sys
import threading
import time

import http_ece
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils

PORT = int(sys.argv[1])
OUT = sys.argv[2]
KEY = ec.generate_private_key(ec.SECP256R1())
AUTH = os.urandom(16)
LOCK = threading.Lock()
COUNT = [0]


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def check_vapid(header, origin):
    """The claims of a valid VAPID token for `origin`, or an exception saying what is wrong."""
    if not header.startswith("vapid "):
        raise ValueError("Authorization is not 'vapid t=..., k=...': %r" % header[:40])
    params = dict(p.strip().split("=", 1) for p in header[len("vapid "):].split(","))
    token, key = params["t"], params["k"]
    head, claims, sig = token.split(".")
    if json.loads(unb64(head)) != {"typ": "JWT", "alg": "ES256"}:
        raise ValueError("JWT header %r" % unb64(head))
    public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64(key))
    raw = unb64(sig)
    if len(raw) != 64:
        raise ValueError("ES256 signature of %d bytes" % len(raw))
    der = utils.encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    try:
        public.verify(der, ("%s.%s" % (head, claims)).encode(), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise ValueError("the VAPID signature does not verify with k")
    c = json.loads(unb64(claims))
    now = time.time()
    if c.get("aud") != origin:
        raise ValueError("aud %r, not %r" % (c.get("aud"), origin))
    if not now < c.get("exp", 0) <= now + 24 * 3600:
        raise ValueError("exp %r is not within 24 hours" % c.get("exp"))
    if not str(c.get("sub", "")).startswith(("mailto:", "https:")):
        raise ValueError("sub %r is not a mailto: or https: contact" % c.get("sub"))
    return c, key


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        record = {"path": self.path, "ttl": self.headers.get("TTL"), "urgency": self.headers.get("Urgency")}
        if self.path.startswith("/gone/"):
            status = 410
            record["refused"] = "gone"
        else:
            try:
                if self.headers.get("Content-Encoding") != "aes128gcm":
                    raise ValueError("Content-Encoding %r" % self.headers.get("Content-Encoding"))
                if len(body) > 4096:
                    raise ValueError("a body of %d bytes, over 4096" % len(body))
                claims, key = check_vapid(self.headers.get("Authorization", ""), "http://127.0.0.1:%d" % PORT)
                plain = http_ece.decrypt(body, private_key=KEY, auth_secret=AUTH, version="aes128gcm")
                record.update(message=json.loads(plain), vapid_sub=claims["sub"], vapid_key=key, size=len(body))
                status = 201
            except Exception as e:  # noqa: BLE001 - every refusal is recorded with its reason
                record["refused"] = "%s: %s" % (type(e).__name__, e)
                status = 400
        with LOCK:
            COUNT[0] += 1
            with open(os.path.join(OUT, "%06d.json" % COUNT[0]), "w") as f:
                json.dump(record, f)
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
public = KEY.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
with open(os.path.join(OUT, "keys.json.tmp"), "w") as f:
    json.dump({"p256dh": b64(public), "auth": b64(AUTH)}, f)
os.rename(os.path.join(OUT, "keys.json.tmp"), os.path.join(OUT, "keys.json"))
server.serve_forever()
