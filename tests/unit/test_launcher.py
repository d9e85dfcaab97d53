"""Task-slot arithmetic and the wait for slots, with a fake clock (no Spark)."""

import pytest

from hvd_otto import InputError
from hvd_otto.driver.launcher import task_slots, wait_for_task_slots

GPU = {"spark.task.resource.gpu.amount": "1", "spark.executor.resource.gpu.amount": "1"}


@pytest.mark.parametrize("master, conf, cpus, parallelism, executors, expected", [
    ("local", {}, 8, 8, 0, 1),
    ("local[3]", {}, 8, 3, 0, 3),
    ("local[*]", {}, 8, 8, 0, 8),
    ("local[4,2]", {}, 8, 4, 0, 4),  # with retries: still 4 cores
    ("local[4]", {"spark.task.cpus": "2"}, 8, 4, 0, 2),
    ("local[2]", GPU, 8, 2, 0, 2),  # local mode ignores GPU amounts
    ("spark://h:7077", {}, 2, 4, 2, 4),
    ("spark://h:7077", {"spark.task.cpus": "2"}, 2, 4, 2, 2),
    ("spark://h:7077", GPU, 2, 4, 2, 2),  # 4 cores but 2 executors × 1 GPU
    ("spark://h:7077", {**GPU, "spark.executor.resource.gpu.amount": "4"}, 2, 8, 1, 4),
    ("yarn", GPU, 2, 4, 0, 0),  # no executor registered yet
])
def test_task_slots(master, conf, cpus, parallelism, executors, expected):
    assert task_slots(master, conf, cpus, parallelism, executors) == expected


class FakeClock:
    def __init__(self):
        self.now = 0.0
        self.sleeps = 0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps += 1
        self.now += seconds


def test_local_mode_fails_at_once_naming_both_numbers():
    clock = FakeClock()
    with pytest.raises(InputError, match=r"numProc=4 \(--num-proc\) needs 4 .* has 2 \(master local\[2\]\)"):
        wait_for_task_slots(lambda: 2, 4, 60, True, "master local[2]", clock, clock.sleep)
    assert clock.sleeps == 0


def test_a_cluster_waits_for_executors_to_register():
    clock = FakeClock()
    seen = iter([0, 0, 1, 2, 2])
    found = wait_for_task_slots(lambda: next(seen), 2, 60, False, "spark://h", clock, clock.sleep)
    assert found == 2 and clock.sleeps == 3


@pytest.mark.parametrize("timeout, waited", [(60, 30), (5, 5)])
def test_a_cluster_gives_up_after_min_of_timeout_and_30_s(timeout, waited):
    clock = FakeClock()
    with pytest.raises(InputError, match=r"lower numProc \(--num-proc\) or add executors"):
        wait_for_task_slots(lambda: 1, 2, timeout, False, "spark://h", clock, clock.sleep)
    assert clock.now == waited


EXECUTOR_GPU = {"spark.executor.resource.gpu.amount": "1"}


@pytest.mark.parametrize("master, conf, resources, profile", [
    ("local[2]", EXECUTOR_GPU, (1, 0), False),  # local mode schedules no GPUs
    ("spark://h:7077", {}, (1, 0), False),
    ("spark://h:7077", EXECUTOR_GPU, (1, 1), True),  # only the Horovod job asks for a GPU
    ("spark://h:7077", {**EXECUTOR_GPU, "spark.task.cpus": "4"}, (4, 1), True),
    ("yarn", GPU, (1, 1), False),  # the user asked every task for a GPU: already scheduled
])
def test_rank_task_resources_and_when_the_horovod_job_needs_a_profile(master, conf, resources,
                                                                      profile):
    from hvd_otto.driver.launcher import needs_stage_profile, rank_task_resources

    assert rank_task_resources(master, conf) == resources
    assert needs_stage_profile(master, conf) is profile


def test_gpu_ranks_are_limited_by_executor_gpus_without_an_app_wide_task_amount():
    # 2 executors × 2 cores × 1 GPU: ETL has 4 slots, ranks 2.
    assert task_slots("spark://h:7077", EXECUTOR_GPU, 2, 4, 2) == 2


@pytest.mark.parametrize("master, conf, num_proc, expected", [
    ("local[2]", {}, 1, 2),       # one rank alone on local[2] uses both cores
    ("local[2]", {}, 2, 1),
    ("local[*]", {}, 3, 2),       # 8 cores (cpu_count below) over 3 ranks
    ("local[4,2]", {}, 2, 2),
    ("local", {}, 1, 1),
    ("local[4]", {"spark.task.cpus": "4"}, 1, 4),
    ("local[2]", {"spark.task.cpus": "2"}, 2, 2),   # never below the task's own cores
    ("spark://h:7077", {}, 1, 1),  # a cluster rank keeps to its task's cores
    ("spark://h:7077", {"spark.task.cpus": "3"}, 2, 3),
    ("yarn", {"spark.task.cpus": "2"}, 1, 2),
])
def test_rank_threads_share_local_cores_and_keep_to_the_task_on_a_cluster(master, conf,
                                                                           num_proc, expected):
    from hvd_otto.driver.launcher import rank_threads

    assert rank_threads(master, conf, num_proc, cpu_count=8) == expected
