"""What a Horovod rank runs (inside a Spark task): device pinning, shard reading, the Keras
loop and its callbacks. Imports only ``hvd_otto.common``."""
