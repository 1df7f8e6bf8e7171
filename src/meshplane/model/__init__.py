"""Pure domain types shared by the registry, translation and the xDS layer. No I/O, no gRPC, no store."""
