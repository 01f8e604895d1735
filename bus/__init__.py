"""The one async MQTT adapter that the edge, the hub and the simulator share.

A package of its own because ``wire`` may import only msgspec and the standard library, and
``edge`` and ``hub`` must not import each other. It imports aiomqtt and nothing of ours.
"""

from bus.mqtt import Broker, BusError, Incoming, LastWill, MqttLink, NotConnected

__all__ = ["Broker", "BusError", "Incoming", "LastWill", "MqttLink", "NotConnected"]
