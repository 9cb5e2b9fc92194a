"""ROS 2 layer: thin rclpy nodes over the ROS-free core. Nothing clever lives here."""
