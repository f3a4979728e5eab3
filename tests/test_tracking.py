import mlflow

from jobs.tracking import mlflow_run


def test_jobs_in_one_process_keep_their_own_tracking_store(tmp_path):
    ids = []
    for name in ("a", "b"):
        with mlflow_run("shards", str(tmp_path / name), run_name=name) as run:
            mlflow.log_param("which", name)
            ids.append(run.info.run_id)
    for name, run_id in zip(("a", "b"), ids):
        mlflow.set_tracking_uri(f"sqlite:///{tmp_path / name}/mlflow.db")
        runs = mlflow.search_runs(experiment_names=["shards"])
        assert runs["run_id"].tolist() == [run_id]
        assert mlflow.get_run(run_id).data.params["which"] == name
    # A resumed job continues its run instead of starting another.
    with mlflow_run("shards", str(tmp_path / "a"), run_name="a", run_id=ids[0]) as run:
        assert run.info.run_id == ids[0]
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'a'}/mlflow.db")
    assert len(mlflow.search_runs(experiment_names=["shards"])) == 1
