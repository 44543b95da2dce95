"""Two processes that pretend to be two machines: torchrun with --nnodes 2, one process per node,
static rendezvous on 127.0.0.1. Ranks and world size come from the launcher (each node has
LOCAL_RANK 0), and the run trains to the same weights as one machine with two processes."""

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from geostrata.train import load_checkpoint

WORKER = Path(__file__).with_name("_ddp_worker.py")
ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _one_machine(out: Path) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(WORKER), str(out), "0"]  # fmt: skip
    assert subprocess.run(cmd, capture_output=True, timeout=300).returncode == 0


def _two_nodes(out: Path) -> list[subprocess.CompletedProcess]:
    port = _free_port()
    nodes = [
        subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank",
             str(rank), "--nproc_per_node", "1", "--rdzv_backend", "static", "--master_addr",
             "127.0.0.1", "--master_port", str(port), str(WORKER), str(out), "0"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        for rank in (0, 1)
    ]
    return [
        subprocess.CompletedProcess(p.args, p.wait(timeout=300), p.stdout.read(), None)
        for p in nodes
    ]


def test_two_nodes_train_like_one_machine_with_two_processes(tmp_path):
    _one_machine(tmp_path / "one")
    results = _two_nodes(tmp_path / "two")
    for result in results:
        assert result.returncode == 0, result.stdout[-2000:]
    state = load_checkpoint(tmp_path / "two" / "step-00000006").trainer_state
    assert state["num_processes"] == 2 and len(state["rng"]) == 2
    ref = load_file(tmp_path / "one" / "final.safetensors")
    got = load_file(tmp_path / "two" / "final.safetensors")
    assert ref.keys() == got.keys()
    for name, value in ref.items():
        torch.testing.assert_close(got[name], value, atol=1e-6, rtol=0)


def test_multinode_accelerate_config_launches_two_machines():
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_multi_gpu_env

    path = ROOT / "configs" / "accelerate" / "ddp_multinode.yaml"
    config = load_config_from_file(str(path))
    assert config.num_machines == 2 and config.num_processes == 16
    parsed = launch_command_parser().parse_args(
        ["--config_file", str(path), "--machine_rank", "1", "x.py"]
    )
    args, _, _ = _validate_launch_command(parsed)
    prepare_multi_gpu_env(args)  # fills the torchrun arguments each machine's launcher gets
    assert (args.nnodes, args.node_rank, args.nproc_per_node) == ("2", 1, "8")
    # accelerate passes the main machine as a static master address or a rendezvous endpoint
    endpoint = getattr(args, "rdzv_endpoint", None) or f"{args.master_addr}:{args.master_port}"
    assert endpoint == "node0:29500"
