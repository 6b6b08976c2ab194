"""A client built by another toolchain from proto/ alone: Python grpcio-tools.

Usage: cross_client.py PROTO_ROOT HOST:PORT TOKEN
Compiles proto/ with grpc_tools.protoc, publishes an alert over EventBus.Publish,
subscribes from just before it and checks it comes back. Prints the event id.
"""

import os
import sys
import tempfile

import grpc
import grpc_tools
from grpc_tools import protoc


def main() -> int:
    proto_root, target, token = sys.argv[1], sys.argv[2], sys.argv[3]
    out = tempfile.mkdtemp()
    include = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    files = ["switchyard/v1/options.proto", "switchyard/v1/events.proto", "switchyard/v1/bus.proto"]
    rc = protoc.main(["protoc", f"-I{proto_root}", f"-I{include}", f"--python_out={out}", f"--grpc_python_out={out}", *files])
    if rc != 0:
        print("protoc failed", file=sys.stderr)
        return 1
    sys.path.insert(0, out)
    from switchyard.v1 import bus_pb2, bus_pb2_grpc, events_pb2  # noqa: E402

    stub = bus_pb2_grpc.EventBusStub(grpc.insecure_channel(target))
    md = [("authorization", f"Bearer {token}")]
    event = events_pb2.Event(key="py-1", alert_info=events_pb2.Alert(title="from python"))
    published = stub.Publish(bus_pb2.PublishRequest(event=event), metadata=md, timeout=20)
    stream = stub.Subscribe(
        bus_pb2.SubscribeRequest(channels=["alerts"], from_id=published.id - 1), metadata=md, timeout=20
    )
    first = next(stream)
    assert first.HasField("status") and first.status.complete, first
    second = next(stream)
    assert second.event.id == published.id, second
    assert second.event.alert_info.title == "from python", second
    assert second.event.tenant == "acme", second
    stream.cancel()
    print(published.id)
    return 0


if __name__ == "__main__":
    sys.exit(main())
