"""rclpy glue: msg <-> ndarray conversions, named QoS profiles, parameter helpers."""
