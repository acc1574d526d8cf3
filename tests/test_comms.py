"""The multi-node plan: collectives and their bytes from first principles (runners/plan/comms.py), sharding over
every node's GPUs, the split between NVLink and the fabric, the cost of a slow fabric, and `--nodes` end to end."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from runners.plan import comms, memory, models, timing
from runners.plan.architecture import params_for_task
from runners.plan.memory import MemoryInput

ROOT = Path(__file__).resolve().parent.parent
H100 = timing.find_gpu("H100")

# gpt2 counted by hand from its config (hidden 768, 12 layers, vocab 50257, 1024 positions, MLP 3072, tied head):
#   embeddings 50257*768 + 1024*768 = 39,383,808
#   per layer: 2 layer norms 2*1536 + c_attn 768*2304+2304 + attn c_proj 768*768+768 + c_fc 768*3072+3072
#              + mlp c_proj 3072*768+768 = 7,087,872; x 12 = 85,054,464
#   final layer norm 1,536
GPT2_PARAMS = 39_383_808 + 12 * 7_087_872 + 1_536


def gpt2(**kw: object) -> MemoryInput:
    base = dict(arch=models.resolve("gpt2").arch, task="causal-lm", batch=8, seq=1024, dtype="float32", mixed="bf16",
                strategy="ddp", num_gpus=8, structure="off")
    return MemoryInput(**{**base, **kw})  # type: ignore[arg-type]


def traffic(inp: MemoryInput, accumulation: int = 1, forward_s: float = 10.0, backward_s: float = 20.0) -> comms.Comms:
    return comms.estimate(inp, H100, GPT2_PARAMS, accumulation, forward_s, backward_s)


def test_the_hand_count_is_the_planners() -> None:
    assert params_for_task(models.resolve("gpt2").arch, "causal-lm") == GPT2_PARAMS == 124_439_808


def test_ddp_is_one_ring_all_reduce_of_the_fp32_gradients() -> None:
    """fp32 weights under bf16 autocast: DDP reduces fp32 gradients; a ring all-reduce over W = 8 sends
    2 (W-1)/W x S per GPU, once per optimizer step whatever the accumulation (no_sync)."""
    expected = 2 * 7 / 8 * GPT2_PARAMS * 4
    for accumulation in (1, 4):
        c = traffic(gpt2(), accumulation)
        assert c.intra_bytes == pytest.approx(expected) and c.inter_bytes == 0 and c.inter_node_bytes == 0
        assert [(r["op"], r["per_step"]) for r in c.rows] == [("all-reduce", 1)]
    # pure bf16 weights: bf16 gradients, half the bytes
    assert traffic(gpt2(dtype="bfloat16")).intra_bytes == pytest.approx(expected / 2)


@pytest.mark.parametrize("strategy, accumulation, ops", [
    # ZeRO-1: the gradients reduce-scattered once, the updated bf16 parameters all-gathered after the step
    ("zero1", 4, [("reduce-scatter", 1), ("all-gather", 1)]),
    # ZeRO-2: DeepSpeed reduces every micro-batch (the gradients are kept as shards)
    ("zero2", 4, [("reduce-scatter", 4), ("all-gather", 1)]),
    # ZeRO-3: parameters gathered in every forward and every backward, gradients reduce-scattered every micro-batch
    ("zero3", 4, [("all-gather", 4), ("all-gather", 4), ("reduce-scatter", 4)]),
    # FSDP full shard: the same gathers; the Trainer's no_sync reduces once per optimizer step
    ("fsdp", 4, [("all-gather", 4), ("all-gather", 4), ("reduce-scatter", 1)]),
    # SHARD_GRAD_OP: parameters gathered once per micro-batch and kept through backward
    ("fsdp_shard_grad_op", 4, [("all-gather", 4), ("reduce-scatter", 1)]),
])
def test_sharded_strategies_move_what_the_zero_paper_says(strategy: str, accumulation: int,
                                                          ops: list[tuple[str, int]]) -> None:
    """DeepSpeed and FSDP send bf16 under bf16 mixed precision; an all-gather or reduce-scatter over W = 8 sends
    (W-1)/W x S per GPU. Without accumulation ZeRO-1/2 move 2 x S (as DDP's all-reduce) and ZeRO-3 3 x S
    (Rajbhandari et al. 2020, section 7)."""
    c = traffic(gpt2(strategy=strategy), accumulation)
    assert [(r["op"], r["per_step"]) for r in c.rows] == ops
    one = 7 / 8 * GPT2_PARAMS * 2
    assert c.intra_bytes == pytest.approx(one * sum(n for _, n in ops))
    if strategy in ("zero1", "zero2", "zero3"):
        assert traffic(gpt2(strategy=strategy), 1).intra_bytes == pytest.approx(one * (3 if strategy == "zero3" else 2))


def test_one_node_sends_nothing_across_and_two_nodes_split_by_the_ring() -> None:
    """NCCL's ring visits a node's 8 GPUs before it crosses: of each GPU's bytes 7/8 stay on NVLink and 1/8 cross,
    so a node sends across what one GPU sends in all."""
    one = traffic(gpt2(strategy="zero3"))
    assert one.inter_bytes == one.inter_node_bytes == 0
    two = traffic(gpt2(strategy="zero3", nodes=2))
    rank = 3 * 15 / 16 * GPT2_PARAMS * 2  # W = 16
    assert two.intra_bytes == pytest.approx(rank * 7 / 8)
    assert two.inter_bytes == pytest.approx(rank / 8)
    assert two.inter_node_bytes == pytest.approx(rank)
    assert one.fabric.world == 8 and two.fabric.world == 16


def test_single_gpu_and_cpu_plans_have_no_communication() -> None:
    assert comms.collectives(gpt2(strategy="single", num_gpus=1), GPT2_PARAMS) == []
    assert comms.collectives(gpt2(strategy="cpu", num_gpus=4), GPT2_PARAMS) == []
    assert timing.step_time(gpt2(strategy="single", num_gpus=1), H100, GPT2_PARAMS).comms is None


def test_zero3_shards_over_every_node() -> None:
    """ZeRO-3's parameters, gradients and optimizer states per GPU halve from 8 GPUs on one node to 8 on each of
    two nodes (16 in all); DDP replicates, so nodes change nothing on a GPU."""
    inp = gpt2(strategy="zero3")
    one, two = memory.estimate(inp), memory.estimate(replace(inp, nodes=2))
    for part in ("weights", "optimizer states"):
        assert two.phases["optimizer step"][part] == pytest.approx(one.phases["optimizer step"][part] / 2)
    assert two.phases["optimizer step"]["gradients"] == pytest.approx(one.phases["optimizer step"]["gradients"] / 2)
    assert memory.estimate(replace(inp, strategy="ddp", nodes=2)).peak_allocated == \
        pytest.approx(memory.estimate(replace(inp, strategy="ddp")).peak_allocated)


def test_offloaded_states_are_spread_over_the_nodes_host_ram() -> None:
    """Each node pins only its GPUs' shards: the offloaded part of host RAM halves with a second node, the
    per-process RAM (8 processes on every node) does not."""
    inp = gpt2(strategy="zero3_offload")
    one, two = memory.estimate(inp), memory.estimate(replace(inp, nodes=2))
    baseline = memory.HOST_BASELINE * 8
    assert two.host_ram - baseline == pytest.approx((one.host_ram - baseline) / 2)


def test_a_slower_fabric_makes_a_longer_step() -> None:
    """Llama-2-70B on 2 x 8 H100 under ZeRO-3: 8 x 400 Gb/s hides the collectives behind compute; 100 Gb/s
    Ethernet per node does not, and the step grows by what is exposed."""
    arch = models.resolve("Llama-2-70b-hf").arch
    inp = MemoryInput(arch=arch, task="causal-lm", batch=1, seq=2048, dtype="float32", mixed="bf16",
                      gradient_checkpointing=True, strategy="zero3", num_gpus=8, nodes=2, structure="off")
    params = params_for_task(arch, "causal-lm")
    fast = timing.step_time(inp, H100, params)
    slow = timing.step_time(replace(inp, interconnect_gbps=100), H100, params)
    assert fast.comms is not None and slow.comms is not None
    assert fast.comms.fabric.inter_gbps == 3200 and slow.comms.fabric.inter_gbps == 100
    assert slow.comms.inter_node_bytes == fast.comms.inter_node_bytes  # same bytes, slower link
    assert slow.step_s > 2 * fast.step_s
    assert slow.step_s - fast.step_s == pytest.approx(slow.comms.exposed_s - fast.comms.exposed_s)
    assert slow.comms.to_json(slow.step_s)["dominates"] and not fast.comms.to_json(fast.step_s)["dominates"]


def test_overlap_hides_what_compute_covers() -> None:
    """DDP's all-reduce runs under backward: with a long backward only the last 25 MiB bucket shows; with a
    backward shorter than the all-reduce, the rest of it shows too."""
    inp = gpt2()
    total = traffic(inp).seconds
    bucket = traffic(inp).fabric.seconds("all-reduce", comms.DDP_BUCKET_BYTES)[0]
    assert traffic(inp, backward_s=10 * total).exposed_s == pytest.approx(bucket)
    assert traffic(inp, backward_s=total / 4).exposed_s == pytest.approx(total * 3 / 4)
    # ZeRO-1/2's all-gather of the updated parameters comes after the optimizer step: nothing hides it
    z1 = traffic(gpt2(strategy="zero1"), backward_s=1e3, forward_s=1e3)
    assert z1.exposed_s >= z1.fabric.seconds("all-gather", GPT2_PARAMS * 2)[0]


def run_plan(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tui", "--plan", "--model_name_or_path", "gpt2", "--task", "causal-lm",
                           "--bf16", "--gpu", "H100", "--gpu_memory_gib", "80", "--host_memory_gib", "512",
                           "--num_train_samples", "64000", *args], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={**os.environ, "COLUMNS": "200"})


def test_nodes_through_the_cli() -> None:
    one = run_plan("--strategy", "zero3", "--num_gpus", "8", "--json")
    two = run_plan("--strategy", "zero3", "--num_gpus", "8", "--nodes", "2", "--json")
    assert one.returncode == 0 and two.returncode == 0, two.stderr
    a, b = json.loads(one.stdout), json.loads(two.stdout)
    assert (b["nodes"], b["gpus_per_node"], b["world_size"], b["num_gpus"]) == (2, 8, 16, 8)
    assert b["per_node"]["gpus"] == 8 and b["per_node"]["host_ram_bytes"] == b["host_ram_bytes"]
    assert b["cadence"]["total_steps"] * 2 == pytest.approx(a["cadence"]["total_steps"], abs=1)  # the global batch doubled
    assert b["time"]["num_gpus"] == 16 and b["time"]["tokens_per_s"]["value"] > a["time"]["tokens_per_s"]["value"]
    ca, cb = a["time"]["communication"], b["time"]["communication"]
    assert ca["inter_node_bytes_per_gpu"] == 0 and cb["inter_node_bytes_per_gpu"] > 0
    assert cb["inter_node_gbps"] == 3200 and "8 x 400 Gb/s" in cb["inter_node_source"]
    assert {"comm_s", "exposed_s", "intra_node_bytes_per_gpu", "inter_node_bytes_per_node"} <= set(cb)
    assert b["time"]["parts_s"]["communication (exposed)"] == pytest.approx(cb["exposed_s"])
    slow = json.loads(run_plan("--strategy", "zero3", "--num_gpus", "8", "--nodes", "2", "--interconnect_gbps", "1",
                               "--json").stdout)
    assert slow["time"]["communication"]["dominates"] and slow["time"]["step_s"]["value"] > b["time"]["step_s"]["value"]


def test_the_report_says_when_communication_dominates() -> None:
    proc = run_plan("--strategy", "zero3", "--num_gpus", "8", "--nodes", "2", "--interconnect_gbps", "1")
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())
    assert "zero3 × 2 nodes × 8" in text and "communication dominates" in text and "GB across nodes" in text


@pytest.mark.parametrize("args, needle", [
    (["--nodes", "0"], "--nodes must be at least 1"),
    (["--strategy", "zero3", "--num_gpus", "8", "--nodes", "2", "--interconnect_gbps", "0"],
     "interconnect_gbps (--interconnect_gbps) must be positive"),
])
def test_bad_node_flags_are_exit_2(args: list[str], needle: str) -> None:
    proc = run_plan(*args)
    assert proc.returncode == 2 and needle in proc.stderr


def test_every_typical_node_names_its_source() -> None:
    table = json.loads(comms.INTERCONNECTS.read_text())
    keys = {g.key for g in timing.gpus()}
    for node in table["nodes"]:
        assert set(node["gpus"]) <= keys and node["inter_gbps"] > 0 and node["source"]
    assert 0 < table["efficiency"]["intra"] <= 1 and 0 < table["efficiency"]["inter"] <= 1


def test_the_setup_preview_shows_the_nodes_and_what_crosses_them() -> None:
    from tui.widgets.plan_view import plan_content

    data = json.loads(run_plan("--strategy", "fsdp", "--num_gpus", "8", "--nodes", "2", "--json").stdout)
    text = plan_content(data, 100).plain
    assert "fsdp × 2 nodes × 8" in text and "GB/GPU across nodes per step" in text
    one = json.loads(run_plan("--strategy", "fsdp", "--num_gpus", "8", "--json").stdout)
    assert "comm:" not in plan_content(one, 100).plain  # one node: the links rarely matter, no extra line
