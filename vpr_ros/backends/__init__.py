"""SLAM back ends that consume odometry and our loop closures (ROS-free)."""
