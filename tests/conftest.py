"""Test setup: two logical CPU devices, so multi-replica tests run without GPUs.

This must happen before TensorFlow initializes its devices, hence here.
"""
import tensorflow as tf

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(_cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
