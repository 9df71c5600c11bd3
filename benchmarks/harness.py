"""One benchmark case at a time: its inputs, the references, each contender's runner and its check.

The tests are ordered case by case (``conftest.pytest_collection_modifyitems``), so the store
holds a single case: switching to the next frees the previous inputs, references and compiled
functions. Check results are kept for the whole session (the report lists them).

The check (run before any timing of a contender on a case, and as its own test):

* spikes must equal a reference *exactly*: c1 at the input dtype for the eager contenders, c1 on
  the fp32 upcast for the fused ones (see ``benchmarks.contenders``); SpikingJelly, whose threshold
  test is ``>=``, may differ only on neurons whose fp32 potential hits the threshold exactly;
* the gradient of ``sum(spikes * g)`` must be close to that reference's gradient in relative L2
  norm: fp32 within 1e-5 (rounding only); 16-bit against the fp32 reference within
  ``2 * err(c1 in that dtype) + 1e-3``, the flash-attention rule (no worse than twice PyTorch's
  own eager error), so the tolerance follows real rounding, and a broken kernel (error ~1) fails.

On CPU the Triton kernel runs in the interpreter, about 10,000x slower than eager: it is checked
on the first rows of each input (``INTERPRETER_ELEMENTS`` neuron-steps, at least one row; the LIF
is independent per row, so the reference's rows are the reference of the rows) and never timed.
"""

from __future__ import annotations

import gc

import pytest
import torch

from benchmarks.common import Case, make_inputs, rel_l2, saved_bytes, threshold_ties
from benchmarks.contenders import Contender, Runner, Unavailable
from snn.lif.reference import lif_reference

INTERPRETER_ELEMENTS = 1 << 18
FP32_GRAD_TOL = 1e-5
LOW_PRECISION_ATOL = 1e-3


class CaseStore:
    def __init__(self, device: torch.device, collector):
        self.device = device
        self.collector = collector
        self.case: Case | None = None
        self.x = self.g = None
        self._refs: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._runners: dict[str, Runner | Unavailable] = {}
        self._ties: torch.Tensor | None = None
        self.checks: dict[tuple[str, str], dict] = {}

    # -- case lifetime ------------------------------------------------------------------------

    def release(self) -> None:
        """Free the current case (inputs, references, runners, compiled graphs)."""
        self.activate(None)

    def activate(self, case: Case | None) -> None:
        if self.case == case:
            return
        self.x = self.g = self._ties = None
        self._refs.clear()
        self._runners.clear()
        torch._dynamo.reset()  # drop the previous case's compiled graphs
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        self.case = case
        if case is not None:
            self.x, self.g = make_inputs(case, self.device)

    def interpreted(self, contender: Contender) -> bool:
        if contender.key != "c4-triton":
            return False
        from snn.kernels import INTERPRETED

        return bool(INTERPRETED)

    def rows_for(self, contender: Contender) -> int:
        """Rows of the input a contender is run on: all, except the interpreter (a prefix)."""
        B, T, N = self.x.shape
        if self.interpreted(contender):
            return max(1, min(B, INTERPRETER_ELEMENTS // (T * N)))
        return B

    # -- references ---------------------------------------------------------------------------

    def reference(self, spec: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(spikes, grad_x) of c1 on the full input: ``spec`` "input" at the input dtype, "fp32" on
        the fp32 upcast (gradient in fp32). For fp32 inputs both are the same computation."""
        if spec == "fp32" and self.x.dtype == torch.float32:
            spec = "input"
        if spec not in self._refs:
            x = self.x if spec == "input" else self.x.float()
            g = self.g if spec == "input" else self.g.float()
            x = x.detach().requires_grad_(True)
            spikes = lif_reference(x)
            (grad,) = torch.autograd.grad(spikes, x, g)
            self._refs[spec] = (spikes.detach(), grad)
        return self._refs[spec]

    def ties(self) -> torch.Tensor:
        if self._ties is None:
            self._ties = threshold_ties(self.x)
        return self._ties

    # -- runners ------------------------------------------------------------------------------

    def runner(self, contender: Contender) -> Runner:
        """The contender bound to this case's input (built once; raises pytest's skip if it
        cannot run here, with the reason)."""
        if contender.key not in self._runners:
            if contender.cuda_only and self.device.type != "cuda":
                self._runners[contender.key] = Unavailable("needs CUDA (SpikingJelly's triton and cupy backends are GPU-only)")
            else:
                rows = self.rows_for(contender)
                try:
                    self._runners[contender.key] = contender.make(self.x[:rows], self.g[:rows])
                except Unavailable as exc:
                    self._runners[contender.key] = exc
        runner = self._runners[contender.key]
        if isinstance(runner, Unavailable):
            self.collector.add("skip", what=f"{contender.label}", case=self.case.id, reason=str(runner))
            pytest.skip(str(runner))
        return runner

    # -- the check ----------------------------------------------------------------------------

    def check(self, contender: Contender) -> dict:
        key = (self.case.id, contender.key)
        if key in self.checks:
            return self.checks[key]
        runner = self.runner(contender)
        rows = self.rows_for(contender)
        spikes = runner.to_btn(runner.forward().detach())
        tie_rows = self.ties()[:rows] if contender.tie_tolerant else None
        result = {"case": self.case.id, "contender": contender.key, "label": contender.label,
                  "rows_checked": rows, "rows_total": self.x.shape[0], **runner.info}

        matched = None
        mismatches = {}
        for spec in contender.compute:
            ref_spikes = self.reference(spec)[0][:rows]
            differ = spikes != ref_spikes.to(spikes.dtype)
            if tie_rows is not None:
                differ = differ & ~tie_rows[:, None, :]
            mismatches[spec] = int(differ.sum())
            if mismatches[spec] == 0:
                matched = spec
                break
        result["spike_mismatches"] = mismatches
        result["spec"] = matched
        if tie_rows is not None:
            result["tie_neurons"] = int(tie_rows.sum())

        if matched is None:
            result.update(status="FAIL", reason=f"spikes differ from every allowed reference: {mismatches} of {spikes.numel()}")
        elif not runner.compare_grad:
            result.update(status="pass", grad="not compared (different surrogate)")
        else:
            grad = runner.to_btn(runner.forward_backward())
            ref_grad = self.reference(matched)[1][:rows]
            grad_f, ref_f = grad.float(), ref_grad.float()
            if tie_rows is not None:
                keep = (~tie_rows)[:, None, :].expand_as(grad_f)
                grad_f, ref_f = grad_f[keep], ref_f[keep]
            err = rel_l2(grad_f, ref_f)
            if self.x.dtype == torch.float32 or matched == "input":
                bound = FP32_GRAD_TOL
            else:
                eager_grad = self.reference("input")[1][:rows].float()
                eager_err = rel_l2(eager_grad, self.reference("fp32")[1][:rows])
                bound = 2 * eager_err + LOW_PRECISION_ATOL
                result["eager_grad_rel_err"] = eager_err
            result.update(grad_rel_err=err, grad_bound=bound)
            if err <= bound:
                result["status"] = "pass"
            else:
                result.update(status="FAIL", reason=f"gradient relative L2 error {err:.3g} > bound {bound:.3g}")
        self.checks[key] = result
        self.collector.add("check", **result)
        return result

    def require_checked(self, contender: Contender) -> Runner:
        """The runner, after its check passed on this case (a failing contender is never timed)."""
        result = self.check(contender)
        if result["status"] != "pass":
            pytest.fail(f"{contender.label} on {self.case.id}: not timed, its check failed: {result['reason']}")
        return self.runner(contender)

    # -- memory -------------------------------------------------------------------------------

    def saved_per_neuron_step(self, contender: Contender) -> tuple[float, float, float | None]:
        """(all, new) bytes per neuron-step from saved_tensors_hooks, and on CUDA a cross-check that
        does not rely on the hooks: the memory the graph holds once the forward returns (allocated
        after minus before, minus the output), which also counts state a contender keeps elsewhere."""
        runner = self.runner(contender)
        total, new = saved_bytes(runner.forward, inputs=(runner.x,))
        n = runner.x.numel()
        held = None
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            before = torch.cuda.memory_allocated(self.device)
            out = runner.forward()
            torch.cuda.synchronize(self.device)
            held = (torch.cuda.memory_allocated(self.device) - before - out.untyped_storage().nbytes()) / n
            del out
        return total / n, new / n, held
