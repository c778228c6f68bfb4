#!/usr/bin/env python3
"""A small Docker registry token server (the "auth: token" flow) for the image store tests.

GET /token?service=S&scope=repository:NAME:ACTIONS with HTTP basic credentials: checks them
against --user USER:PASSWORD, and answers {"token": JWT, "access_token": JWT, ...} where the JWT
(RS256, signed with --signing-key, its certificate in the x5c header so that docker-registry's
`rootcertbundle` verifies it) grants the requested actions on that repository. Wrong or missing
credentials: 401. Serves HTTPS with --cert/--key (or plain HTTP without them) on 127.0.0.1; the
port it got is written to --port-file. Every request is logged (one JSON line) to --log.

Only the Python standard library and python3-cryptography.
"""
import argparse
import base64
import hmac
import http.server
import json
import os
import ssl
import sys
import time
import urllib.parse

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--signing-key", required=True)
    ap.add_argument("--signing-cert", required=True)
    ap.add_argument("--issuer", required=True)
    ap.add_argument("--service", required=True)
    ap.add_argument("--user", required=True, help="USER:PASSWORD")
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--log", required=True)
    args = ap.parse_args()

    with open(args.signing_key, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    with open(args.signing_cert, "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    x5c = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
    want_user, want_password = args.user.split(":", 1)

    def sign(claims: dict) -> str:
        header = {"typ": "JWT", "alg": "RS256", "x5c": [x5c]}
        signing_input = (b64url(json.dumps(header).encode()) + "." +
                         b64url(json.dumps(claims).encode()))
        signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return signing_input + "." + b64url(signature)

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, fmt, *a):  # quiet: requests go to --log
            pass

        def record(self, status, user, scope):
            with open(args.log, "a") as f:
                f.write(json.dumps({"path": self.path.split("?")[0], "status": status,
                                    "user": user, "scope": scope}) + "\n")

        def reply(self, status, body, extra=None):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            url = urllib.parse.urlsplit(self.path)
            query = urllib.parse.parse_qs(url.query)
            scope = query.get("scope", [""])[0]
            service = query.get("service", [""])[0]
            user, password = "", ""
            auth = self.headers.get("Authorization", "")
            if auth.startswith("Basic "):
                try:
                    user, password = base64.b64decode(auth[6:]).decode().split(":", 1)
                except (ValueError, UnicodeDecodeError):
                    user, password = "", ""
            if url.path != "/token":
                self.record(404, user, scope)
                return self.reply(404, {"error": "not found"})
            ok = (hmac.compare_digest(user, want_user) and
                  hmac.compare_digest(password, want_password))
            if not ok:
                self.record(401, user, scope)
                return self.reply(401, {"error": "wrong user name or password"},
                                  {"WWW-Authenticate": 'Basic realm="corral-test-token"'})
            if service != args.service:
                self.record(400, user, scope)
                return self.reply(400, {"error": "unknown service " + service})
            access = []
            parts = scope.split(":")
            if len(parts) == 3 and parts[0] == "repository":
                actions = [a for a in parts[2].split(",") if a in ("pull", "push")]
                access.append({"type": "repository", "name": parts[1], "actions": actions})
            now = int(time.time())
            token = sign({"iss": args.issuer, "sub": user, "aud": args.service,
                          "exp": now + 300, "nbf": now - 10, "iat": now,
                          "jti": b64url(os.urandom(12)), "access": access})
            self.record(200, user, scope)
            self.reply(200, {"token": token, "access_token": token, "expires_in": 300,
                             "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))})

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if args.cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(args.cert, args.key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(server.server_address[1]))
    os.rename(tmp, args.port_file)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
