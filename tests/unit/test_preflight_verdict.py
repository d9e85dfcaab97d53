"""The preflight verdict: what a worker's Python lacks or has at another version."""


def test_preflight_names_what_is_missing_or_different():
    from hvd_otto.common.preflight import TRAINING_MODULES, local_report, problems

    driver = local_report(TRAINING_MODULES)
    assert problems(driver, driver) == []
    worker = {**driver, "modules": {**driver["modules"], "horovod": None, "tensorflow": None,
                                    "pyarrow": "15.0.0", "hvd_otto": "unknown"}}
    assert problems(driver, worker) == [
        "lacks tensorflow, horovod", f"has pyarrow 15.0.0 where the driver has "
                                     f"{driver['modules']['pyarrow']}"]
