"""FSDP2 over every process: Lightning's ModelParallelStrategy with all ranks data-parallel."""

from __future__ import annotations

from datetime import timedelta

from lightning.pytorch.strategies import ModelParallelStrategy


class FSDP2Strategy(ModelParallelStrategy):
    """Shards parameters, gradients and optimizer state over all processes (``fully_shard``).

    ``ModelParallelStrategy`` by default makes each node one data-parallel replica and the devices
    of a node a tensor-parallel group; we apply no tensor parallelism, so every process (on every
    node) is its own data-parallel rank. The sharding itself happens in
    ``TrainingStage.configure_model``. Unlike Lightning's ``FSDPStrategy`` (FSDP1) this runs on CPU
    processes (gloo) as well as on GPUs (NCCL).
    """

    def __init__(
        self,
        save_distributed_checkpoint: bool = True,
        process_group_backend: str | None = None,
        timeout: timedelta | None = timedelta(minutes=30),
    ) -> None:
        super().__init__(
            data_parallel_size="auto", tensor_parallel_size=1, save_distributed_checkpoint=save_distributed_checkpoint,
            process_group_backend=process_group_backend, timeout=timeout,
        )

    def setup_environment(self) -> None:
        self._data_parallel_size = self.num_nodes * self.num_processes
        super().setup_environment()
