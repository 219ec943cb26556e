"""The local emulator: API Gateway's WebSocket API and the DynamoDB Streams
event-source mapping on one machine, around the same core services as Lambda."""

from emulator.server import Emulator, EmulatorConfig

__all__ = ["Emulator", "EmulatorConfig"]
