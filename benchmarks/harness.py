"""The correctness gate before timing: per case, each contender's spikes must equal the reference's
(``seed-index``) exactly and its gradient be within rounding; a contender that fails is not timed.

Gradient bound: 1e-5 relative L2 against the reference in fp32 (or at the input dtype when that is
the reference met); for a 16-bit input checked against the fp32 upcast, ``2 x`` the reference's own
16-bit error + 1e-3 (the flash-attention rule). The Triton interpreter (CPU) is checked on the first
rows of each input (``INTERPRETER_ELEMENTS`` neuron-steps, at least one row; rows are independent).
"""

from __future__ import annotations

import gc

import pytest
import torch

from benchmarks.common import Case, make_inputs, rel_l2, saved_storages, threshold_ties
from benchmarks.contenders import OURS_GPU, Contender, Runner, Unavailable
from snn.lif.reference import lif_reference

INTERPRETER_ELEMENTS = 1 << 18
FP32_GRAD_TOL, LOW_PRECISION_ATOL = 1e-5, 1e-3


class CaseStore:
    """One case's inputs, references and bound contenders at a time (tests are ordered case by case)."""

    def __init__(self, device: torch.device, records):
        self.device, self.records = device, records
        self.case: Case | None = None
        self.x = self.g = self._ties = None
        self._refs, self._runners, self.checks = {}, {}, {}

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

    def rows_for(self, contender: Contender) -> int:
        B, T, N = self.x.shape
        if contender.key == OURS_GPU:
            from snn.kernels import INTERPRETED

            if INTERPRETED:
                return max(1, min(B, INTERPRETER_ELEMENTS // (T * N)))
        return B

    def reference(self, spec: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(spikes, grad_x) of the reference: ``"input"`` at the input dtype, ``"fp32"`` on the fp32 upcast."""
        spec = "input" if self.x.dtype == torch.float32 else spec
        if spec not in self._refs:
            x, g = (self.x, self.g) if spec == "input" else (self.x.float(), self.g.float())
            x = x.detach().requires_grad_(True)
            spikes = lif_reference(x)
            self._refs[spec] = (spikes.detach(), torch.autograd.grad(spikes, x, g)[0])
        return self._refs[spec]

    def runner(self, contender: Contender) -> Runner:
        """The contender bound to this case's input (built once), or pytest's skip with the reason."""
        if contender.key not in self._runners:
            try:
                if contender.cuda_only and self.device.type != "cuda":
                    raise Unavailable("needs CUDA (SpikingJelly's Triton provider is GPU-only)")
                rows = self.rows_for(contender)
                self._runners[contender.key] = contender.make(self.x[:rows], self.g[:rows])
            except Unavailable as exc:
                self._runners[contender.key] = exc
        runner = self._runners[contender.key]
        if isinstance(runner, Unavailable):
            self.records.add("skip", what=contender.label, case=self.case.id, reason=str(runner))
            pytest.skip(str(runner))
        return runner

    def check(self, contender: Contender) -> dict:
        key = (self.case.id, contender.key)
        if key in self.checks:
            return self.checks[key]
        runner, rows = self.runner(contender), self.rows_for(contender)
        spikes = runner.to_btn(runner.forward().detach())
        if contender.tie_tolerant:
            self._ties = threshold_ties(self.x) if self._ties is None else self._ties
        ties = self._ties[:rows, None, :] if contender.tie_tolerant else None
        result = {"case": self.case.id, "contender": contender.key, "label": contender.label,
                  "rows_checked": rows, "rows_total": self.x.shape[0], "spec": None, "spike_mismatches": {}, **runner.info}
        for spec in contender.compute:
            differ = spikes != self.reference(spec)[0][:rows].to(spikes.dtype)
            result["spike_mismatches"][spec] = int((differ & ~ties if ties is not None else differ).sum())
            if result["spike_mismatches"][spec] == 0:
                result["spec"] = spec
                break
        if result["spec"] is None:
            result.update(status="FAIL", reason=f"spikes differ from every allowed reference: {result['spike_mismatches']}")
        else:
            grad = runner.to_btn(runner.forward_backward()).float()
            ref = self.reference(result["spec"])[1][:rows].float()
            if ties is not None:
                keep = (~ties).expand_as(grad)
                grad, ref = grad[keep], ref[keep]
            bound = FP32_GRAD_TOL
            if self.x.dtype != torch.float32 and result["spec"] == "fp32":
                own = rel_l2(self.reference("input")[1][:rows].float(), self.reference("fp32")[1][:rows])
                result["eager_grad_rel_err"], bound = own, 2 * own + LOW_PRECISION_ATOL
            err = rel_l2(grad, ref)
            result.update(grad_rel_err=err, grad_bound=bound, status="pass" if err <= bound else "FAIL",
                          reason=None if err <= bound else f"gradient relative L2 error {err:.3g} > bound {bound:.3g}")
        self.checks[key] = self.records.add("check", **result)
        return result

    def require_checked(self, contender: Contender) -> Runner:
        result = self.check(contender)
        if result["status"] != "pass":
            pytest.fail(f"{contender.label} on {self.case.id}: not timed, its check failed: {result['reason']}")
        return self.runner(contender)

    def saved_per_neuron_step(self, contender: Contender) -> tuple[float, float, float | None]:
        """(all, new) saved bytes per neuron-step, and on CUDA a cross-check without the hooks: memory
        held once the forward returns (allocated after minus before, minus the output)."""
        runner = self.runner(contender)
        storages, own = saved_storages(runner.forward), runner.x.untyped_storage().data_ptr()
        total, new = sum(storages.values()), sum(n for p, n in storages.items() if p != own)
        n, held = runner.x.numel(), None
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            before = torch.cuda.memory_allocated(self.device)
            out = runner.forward()
            torch.cuda.synchronize(self.device)
            held = (torch.cuda.memory_allocated(self.device) - before - out.untyped_storage().nbytes()) / n
        return total / n, new / n, held
