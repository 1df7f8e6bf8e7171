"""The name table the control plane pushes to DNS proxies over xDS (NDS), in Istio's wire shape.

Why Istio's message: Istio's agent subscribes to ``type.googleapis.com/istio.networking.nds.v1.NameTable`` on its
xDS stream and answers its pod's DNS from it; a client of either speaks the same bytes. The proto is not part of
xds-protos, so the message classes are built here from a descriptor (``istio/networking/nds/v1/nds.proto``):

    message NameTable {
      message NameInfo {
        repeated string ips = 1;        // IPv4/IPv6 addresses of the host (virtual IPs, auto-allocated or not)
        string registry = 2;            // "Kubernetes" for NAME.NAMESPACE.svc.<domain> hosts, else "External"
        string shortname = 3;           // Kubernetes: the service's name ("reviews")
        string namespace = 4;           // Kubernetes: its namespace ("default")
        repeated string alt_hosts = 5;  // other names answering with the same ips
      }
      map<string, NameInfo> table = 1;  // host name -> what to answer
    }
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

TYPE_URL = "type.googleapis.com/istio.networking.nds.v1.NameTable"
KUBERNETES = "Kubernetes"
EXTERNAL = "External"


def _messages() -> tuple[type[Any], type[Any]]:
    F = descriptor_pb2.FieldDescriptorProto
    fd = descriptor_pb2.FileDescriptorProto(name="meshplane/istio_nds.proto", package="istio.networking.nds.v1",
                                            syntax="proto3")
    table = fd.message_type.add(name="NameTable")
    info = table.nested_type.add(name="NameInfo")
    info.field.add(name="ips", number=1, type=F.TYPE_STRING, label=F.LABEL_REPEATED)
    info.field.add(name="registry", number=2, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    info.field.add(name="shortname", number=3, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    info.field.add(name="namespace", number=4, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    info.field.add(name="alt_hosts", number=5, type=F.TYPE_STRING, label=F.LABEL_REPEATED)
    entry = table.nested_type.add(name="TableEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    entry.field.add(name="value", number=2, type=F.TYPE_MESSAGE, label=F.LABEL_OPTIONAL,
                    type_name=".istio.networking.nds.v1.NameTable.NameInfo")
    table.field.add(name="table", number=1, type=F.TYPE_MESSAGE, label=F.LABEL_REPEATED,
                    type_name=".istio.networking.nds.v1.NameTable.TableEntry")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    return (message_factory.GetMessageClass(pool.FindMessageTypeByName("istio.networking.nds.v1.NameTable")),
            message_factory.GetMessageClass(pool.FindMessageTypeByName(
                "istio.networking.nds.v1.NameTable.NameInfo")))


NameTable, NameInfo = _messages()
