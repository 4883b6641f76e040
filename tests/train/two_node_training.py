"""Run by test_multi_node.py in a process of its own (the test session already holds a Ray
instance): start a two-node local cluster, train one epoch on two workers, print a JSON line."""

import json
import os
import sys

import ray
from ray.cluster_utils import Cluster

from train.config import TrainConfig
from train.driver import run_training


def main(data_dir: str, storage_path: str) -> None:
    os.environ["RAY_AUTH_MODE"] = "disabled"  # a private, loopback-only test cluster
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False}
    )
    cluster.add_node(num_cpus=1)
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        cluster.wait_for_nodes()
        cfg = TrainConfig(
            data_dir=data_dir, image_size=32, epochs=1, batch_size=8, warmup_epochs=0,
            pretrained="none",
        )  # fmt: skip
        result = run_training(
            cfg, num_workers=2, storage_path=storage_path, name="two-nodes", max_failures=0
        )
        nodes = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])
        metrics = {k: result.metrics[k] for k in ("epoch", "num_nodes", "worker_node_ids")}
        print(json.dumps({"cluster_nodes": nodes, **metrics}), flush=True)
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
