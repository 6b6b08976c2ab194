"""A real SMTP server (aiosmtpd) for the outbound e-mail test, requiring STARTTLS.

Usage: smtp_sink.py <cert.pem> <key.pem> <log-file>
Appends one JSON line per message received: {"from", "to", "subject", "body", "tls"}.
Prints `port=<n>` once listening on 127.0.0.1.
"""
import json
import socket
import ssl
import sys
import time
from email import message_from_bytes

from aiosmtpd.controller import Controller

cert, key, log_file = sys.argv[1], sys.argv[2], sys.argv[3]


class Sink:
    async def handle_DATA(self, server, session, envelope):
        msg = message_from_bytes(envelope.original_content)
        line = {"from": envelope.mail_from, "to": envelope.rcpt_tos, "subject": msg["subject"],
                "body": msg.get_payload(decode=True).decode("utf-8", "replace"),
                "tls": session.ssl is not None}
        with open(log_file, "a") as f:
            f.write(json.dumps(line) + "\n")
        return "250 OK"


context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
context.load_cert_chain(cert, key)
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
controller = Controller(Sink(), hostname="127.0.0.1", port=port, tls_context=context, require_starttls=True)
controller.start()
print(f"port={port}", flush=True)
while True:
    time.sleep(3600)
