"""Pulumi entry point: read the `streamer:*` config, declare the stack, export outputs."""

from streamer_stack import StackConfig, create_stack

create_stack(StackConfig.from_pulumi()).export()
