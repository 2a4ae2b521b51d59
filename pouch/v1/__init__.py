"""Generated from proto/pouch/v1 by scripts/gen_proto.py."""
