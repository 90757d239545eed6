#!/usr/bin/env python3
"""A deployer behind Borealis's `webhook` rollout driver: it checks each
action's Standard Webhooks signature, then runs a command of yours with the
action in its environment. A command that fails answers 500, so the
deployment rolls the target back; a call that is not signed with your key
answers 401 and runs nothing.

    pip install standardwebhooks
    python3 receiver.py --listen 127.0.0.1:9000 \\
        --secret-file deployer.key \\
        --run 'kubectl -n "$BOREALIS_NAMESPACE" set image "deployment/$BOREALIS_APPLICATION" web="$BOREALIS_ARTIFACT_WEB"'

The command runs through `sh -c` with, besides the receiver's environment:

- BOREALIS_ACTION: deploy, setWeight, redirectTraffic, promote, rollback or cancel
- BOREALIS_WEIGHT: the traffic weight of a setWeight action (else empty)
- BOREALIS_APPLICATION, BOREALIS_TARGET, BOREALIS_ACCOUNT, BOREALIS_NAMESPACE,
  BOREALIS_DEPLOYMENT_ID
- BOREALIS_ARTIFACT_<NAME> for each artifact and BOREALIS_CONTEXT_<KEY> for
  each context value (the name upper-cased, other characters as `_`)
- BOREALIS_WEBHOOK_ID: the call's `webhook-id`, the same when Borealis
  repeats the call after a restart: use it to do an action only once.

The key file holds the secret as Standard Webhooks writes it (`whsec_...`),
the same value stored in the relay (`borealis secrets set deployer-key`) and
named by the driver (`signing: {secret: "{{secrets.deployer-key}}"}`).
Without --run, the receiver prints each action and answers 200.

Each action handled is printed as one JSON line on standard output.
"""

import argparse
import json
import os
import re
import subprocess
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook

MAX_BODY = 1024 * 1024


def env_name(prefix, name):
    return prefix + re.sub(r"[^A-Z0-9]", "_", name.upper())


def environment(action, webhook_id):
    env = dict(os.environ)
    fields = {
        "BOREALIS_ACTION": action.get("action"),
        "BOREALIS_WEIGHT": action.get("weight"),
        "BOREALIS_APPLICATION": action.get("application"),
        "BOREALIS_TARGET": action.get("target"),
        "BOREALIS_ACCOUNT": action.get("account"),
        "BOREALIS_NAMESPACE": action.get("namespace"),
        "BOREALIS_DEPLOYMENT_ID": action.get("deploymentId"),
        "BOREALIS_WEBHOOK_ID": webhook_id,
    }
    for key, value in fields.items():
        env[key] = "" if value is None else str(value)
    for name, value in (action.get("artifacts") or {}).items():
        env[env_name("BOREALIS_ARTIFACT_", name)] = str(value)
    for key, value in (action.get("context") or {}).items():
        env[env_name("BOREALIS_CONTEXT_", key)] = str(value)
    return env


def handler(verifier, command, timeout):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def answer(self, status, text):
            data = (text + "\n").encode()
            self.send_response(status)
            self.send_header("content-type", "text/plain")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):
            length = int(self.headers.get("content-length") or 0)
            if length > MAX_BODY:
                return self.answer(413, "body too large")
            body = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            try:
                verifier.verify(body, headers, json_parse=False)
            except Exception as err:  # any failure to verify is a refusal
                return self.answer(401, f"signature not verified: {err}")
            try:
                action = json.loads(body)
            except ValueError:
                return self.answer(400, "the body is not JSON")
            record = {"webhookId": headers.get("webhook-id"), **action}
            if command is None:
                print(json.dumps(record), flush=True)
                return self.answer(200, "ok")
            env = environment(action, headers.get("webhook-id"))
            try:
                done = subprocess.run(["sh", "-c", command], env=env, timeout=timeout, capture_output=True, text=True)
                status, output = done.returncode, (done.stdout + done.stderr)[-2000:]
            except subprocess.TimeoutExpired:
                status, output = None, f"the command did not finish within {timeout}s"
            record["exitCode"] = status
            print(json.dumps(record), flush=True)
            if status == 0:
                return self.answer(200, output)
            return self.answer(500, f"the command failed ({status}): {output}")

    return Handler


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", default="127.0.0.1:9000", help="HOST:PORT (port 0: any free port)")
    parser.add_argument("--secret-file", help="the whsec_... key (else the DEPLOYER_SECRET environment variable)")
    parser.add_argument("--run", help="the command for each action, run by sh -c")
    parser.add_argument("--timeout", type=float, default=300, help="seconds a command may take")
    args = parser.parse_args()
    if args.secret_file:
        with open(args.secret_file) as key:
            secret = key.read().strip()
    else:
        secret = os.environ.get("DEPLOYER_SECRET", "")
    if not secret:
        sys.exit("no key: give --secret-file or set DEPLOYER_SECRET (never a flag value: ps would show it)")
    host, port = args.listen.rsplit(":", 1)
    server = ThreadingHTTPServer((host, int(port)), handler(Webhook(secret), args.run, args.timeout))
    print(f"listening {server.server_address[1]}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
