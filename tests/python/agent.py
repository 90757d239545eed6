#!/usr/bin/env python3
"""An agent written from proto/borealis/tunnel/v1/tunnel.proto and
docs/tunnel-protocol.md alone, with Python's grpcio: the check that the
contract is enough to build an agent from, on Forward calls (offers) and,
with --lanes N, on lanes (diverting what does not fit to a Forward call).

Usage: agent.py --relay HOST:PORT --client-id ID --allow HOST:PORT [--lanes N]
The client secret comes from BOREALIS_CLIENT_SECRET. It writes
"python agent connected session=... lanes=N" to stderr once welcomed, one
line per request ("done request=... status=..."), and exits when its
parent does.
"""

import argparse
import ctypes
import http.client
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

import grpc

PROTO_ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "proto")
INLINE = 64 * 1024  # the most body a head (and a lane) carries


def generated_modules():
    """tunnel_pb2 and tunnel_pb2_grpc, generated from the proto at start."""
    out = tempfile.mkdtemp(prefix="borealis-python-agent-")
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO_ROOT}", f"--python_out={out}",
         f"--grpc_python_out={out}", os.path.join(PROTO_ROOT, "borealis/tunnel/v1/tunnel.proto")],
        check=True,
    )
    sys.path.insert(0, out)
    from borealis.tunnel.v1 import tunnel_pb2, tunnel_pb2_grpc  # noqa: E402
    return tunnel_pb2, tunnel_pb2_grpc


pb, pb_grpc = generated_modules()


def say(text):
    print(text, file=sys.stderr, flush=True)


def fetch_token(relay, client_id, secret):
    form = urllib.parse.urlencode(
        {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}).encode()
    with urllib.request.urlopen(f"http://{relay}/oauth/token", data=form, timeout=10) as reply:
        return json.load(reply)["access_token"]


class Agent:
    def __init__(self, args, token):
        self.args = args
        self.metadata = [("authorization", f"Bearer {token}")]
        self.channel = grpc.insecure_channel(args.relay)
        self.stub = pb_grpc.TunnelStub(self.channel)
        self.session_id = None

    # ------------------------------------------------------------ control

    def run(self):
        outgoing = queue.Queue()
        outgoing.put(pb.AgentControl(hello=pb.Hello(
            version="python-agent", capacity=16, instance="python", protocol_version=2,
            standby_calls=0, lanes=self.args.lanes)))
        replies = self.stub.Control(iter(outgoing.get, None), metadata=self.metadata)
        welcome = next(replies).welcome
        self.session_id = welcome.session_id
        say(f"python agent connected session={welcome.session_id} lanes={welcome.lanes}")
        interval = max(welcome.heartbeat_interval_ms, 100) / 1000

        def beat():
            sequence = 0
            while True:
                sequence += 1
                outgoing.put(pb.AgentControl(heartbeat=pb.Heartbeat(sequence=sequence)))
                time.sleep(interval)

        threading.Thread(target=beat, daemon=True).start()
        for lane in range(welcome.lanes):
            threading.Thread(target=self.lane, args=(lane,), daemon=True).start()
        for message in replies:
            if message.HasField("offer"):
                threading.Thread(target=self.offered, args=(message.offer.request_id,), daemon=True).start()

    # ------------------------------------------------------------ forward calls

    def forward_call(self, request_id):
        """Opens Forward with Accept for request_id: (frames to send, replies)."""
        frames = queue.Queue()
        frames.put(pb.AgentFrame(request_id=request_id, accept=pb.Accept(session_id=self.session_id)))
        return frames, self.stub.Forward(iter(frames.get, None), metadata=self.metadata)

    def offered(self, request_id):
        frames, replies = self.forward_call(request_id)
        head = next(replies).request_head
        body = head.body
        if head.has_body:
            parts = []
            for frame in replies:
                if frame.HasField("request_body"):
                    parts.append(frame.request_body.data)
                elif frame.HasField("request_end"):
                    break
            body = b"".join(parts)
        self.answer_on_call(request_id, frames, self.call(head, body))
        frames.put(None)  # our side ends first; then read theirs to its end
        for _ in replies:
            pass

    def answer_on_call(self, request_id, frames, outcome):
        kind, value = outcome
        if kind == "failure":
            frames.put(pb.AgentFrame(request_id=request_id, failure=value))
            return
        response, connection = value
        status, headers = response.status, self.headers_of(response)
        length = response.getheader("content-length")
        if length is not None and int(length) <= INLINE:
            body = response.read()
            frames.put(pb.AgentFrame(request_id=request_id, response_head=pb.ResponseHead(
                status=status, headers=headers, body=body, complete=True)))
        else:
            frames.put(pb.AgentFrame(request_id=request_id, response_head=pb.ResponseHead(
                status=status, headers=headers)))
            while chunk := response.read(INLINE):
                frames.put(pb.AgentFrame(request_id=request_id, response_body=pb.BodyChunk(data=chunk)))
            frames.put(pb.AgentFrame(request_id=request_id, response_end=pb.End()))
        connection.close()
        say(f"done request={request_id} status={status}")

    # ------------------------------------------------------------ lanes

    def lane(self, index):
        answers = queue.Queue()

        def messages():
            yield pb.AgentLane(open=pb.LaneOpen(session_id=self.session_id, lane=index))
            while True:
                first = answers.get()
                if first is None:
                    return
                batch = [first]
                while True:  # whatever else is ready goes in the same message
                    try:
                        more = answers.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        answers.put(None)
                        break
                    batch.append(more)
                yield pb.AgentLane(answers=batch)

        replies = self.stub.Lane(messages(), metadata=self.metadata)
        workers = []
        for message in replies:
            for request in message.requests:
                worker = threading.Thread(target=self.on_lane, args=(request, answers), daemon=True)
                worker.start()
                workers.append(worker)
        # The relay ended the lane: answer what is left, then end ours.
        for worker in workers:
            worker.join()
        answers.put(None)

    def on_lane(self, request, answers):
        kind, value = self.call(request.head, request.head.body)
        if kind == "failure":
            answers.put(pb.LaneAnswer(id=request.id, failure=value))
            return
        response, connection = value
        length = response.getheader("content-length")
        if length is not None and int(length) <= INLINE:
            body = response.read()
            head = pb.ResponseHead(status=response.status, headers=self.headers_of(response), body=body,
                                   complete=True)
            answers.put(pb.LaneAnswer(id=request.id, response=head))
            connection.close()
            say(f"done request={request.request_id} status={response.status} lane=yes")
            return
        # Too large or streamed for a lane: divert to a call of its own.
        frames, replies = self.forward_call(request.request_id)
        answers.put(pb.LaneAnswer(id=request.id, divert=pb.Divert()))
        self.answer_on_call(request.request_id, frames, (kind, value))
        frames.put(None)
        for _ in replies:
            pass

    # ------------------------------------------------------------ the destination

    def call(self, head, body):
        """Calls the destination: ("response", (response, connection)) or ("failure", Failure)."""
        url = urllib.parse.urlsplit(head.url)
        destination = f"{url.hostname}:{url.port or 80}"
        if url.scheme != "http" or destination not in self.args.allow:
            return "failure", pb.Failure(code=pb.ERROR_CODE_DESTINATION_NOT_ALLOWED,
                                         message=f"{destination} is not in the allow-list")
        timeout = head.timeout_ms / 1000 if head.timeout_ms else None
        connection = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=timeout)
        path = url.path or "/"
        if url.query:
            path += "?" + url.query
        try:
            connection.request(head.method, path, body=body or None,
                               headers={h.name: h.value.decode("latin-1") for h in head.headers})
            return "response", (connection.getresponse(), connection)
        except OSError as err:
            return "failure", pb.Failure(code=pb.ERROR_CODE_CONNECT_FAILED, message=str(err))

    @staticmethod
    def headers_of(response):
        hop_by_hop = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
                      "proxy-authenticate", "proxy-authorization"}
        return [pb.Header(name=name.lower(), value=value.encode("latin-1"))
                for name, value in response.getheaders() if name.lower() not in hop_by_hop]


def main():
    # Ends with the process that started it (PR_SET_PDEATHSIG), however that ends.
    ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)
    parser = argparse.ArgumentParser()
    parser.add_argument("--relay", required=True)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--allow", action="append", default=[])
    parser.add_argument("--lanes", type=int, default=0)
    args = parser.parse_args()
    token = fetch_token(args.relay, args.client_id, os.environ["BOREALIS_CLIENT_SECRET"])
    Agent(args, token).run()


if __name__ == "__main__":
    main()
