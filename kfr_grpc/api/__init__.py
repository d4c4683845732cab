"""The gRPC layer: servicers that translate protobuf to the register's plain types and
back, and the interceptor that handles what every call shares."""
