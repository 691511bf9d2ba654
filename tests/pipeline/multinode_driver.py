"""Run one recipe on a 2-node `ray.cluster_utils.Cluster`, then on a 1-node local Ray (a subprocess of the test).

usage: python multinode_driver.py RECIPE CORPUS OUT_MULTI OUT_SINGLE TRACE_DIR
Prints a JSON line: the node ids of the cluster and which nodes ran each stage.
"""
import json
import os
import sys

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def main(recipe_path, corpus, out_multi, out_single, trace_dir):
    os.environ["DATAENGINE_TRACE_DIR"] = trace_dir  # inherited by both nodes' workers
    import ray
    from ray.cluster_utils import Cluster

    from dataengine.pipeline.run import run_pipeline
    from dataengine.pipeline.trace import traced_nodes
    from dataengine.recipe import load_recipe

    recipe = load_recipe(recipe_path, inputs=[corpus])
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    run_pipeline(recipe, out_multi, address=cluster.address, log=lambda *_: None)
    nodes = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])
    ray.shutdown()
    cluster.shutdown()
    trace = {k: sorted(v) for k, v in traced_nodes(trace_dir).items()}

    os.environ.pop("DATAENGINE_TRACE_DIR")
    run_pipeline(recipe, out_single, log=lambda *_: None)  # a local 2-CPU Ray, started by the engine
    ray.shutdown()
    print(json.dumps({"nodes": nodes, "trace": trace}))


if __name__ == "__main__":
    main(*sys.argv[1:6])
