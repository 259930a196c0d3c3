import os

import torch

# Two CI cores are shared by pytest and the ROS node processes the tests start; one intra-op
# thread per process keeps them from oversubscribing the machine.
torch.set_num_threads(int(os.environ.get("NPISEG_TEST_THREADS", "1")))
