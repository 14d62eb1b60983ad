"""The model worker and its client, without napari: jobs, streaming, cancel, death, safety."""

from __future__ import annotations

import os
import pickle
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Listener

import numpy as np
import pytest

from napari_skinseg.bundled import BUNDLED_MODEL_NAME
from napari_skinseg.config import TrainConfig
from napari_skinseg.reports import BatchProgress, EpochReport, TrainingSummary
from napari_skinseg.synthetic import make_synthetic_lesion, write_synthetic_dataset
from napari_skinseg import worker_client, worker_process
from napari_skinseg.worker_client import JobCancelled, WorkerClient, WorkerDied, WorkerError
from napari_skinseg.worker_protocol import dumps, loads


@pytest.fixture(scope="module")
def client():
    c = WorkerClient()
    yield c
    c.shutdown()


def test_predict_streams_probabilities_at_the_image_size(client):
    image, truth = make_synthetic_lesion((120, 90), seed=3)
    items = list(client.submit("predict", images=[("a", image), ("b", image[:64])]).stream())
    assert items[0][0] == "model" and items[0][1]["name"] == BUNDLED_MODEL_NAME
    assert [(name, p.shape) for name, p in items[1:]] == [("a", (120, 90)), ("b", (64, 90))]
    dice = 2 * ((items[1][1] > 0.5) & truth).sum() / ((items[1][1] > 0.5).sum() + truth.sum())
    assert dice > 0.8


def test_errors_come_back_as_one_sentence(client, tmp_path):
    (tmp_path / "x.pt").write_bytes(b"\x00" * 10)
    with pytest.raises(WorkerError, match="x.pt is not a readable napari-skinseg model file"):
        client.call("model_info", model=str(tmp_path / "x.pt"))
    with pytest.raises(WorkerError, match="no job called 'nope'"):
        client.call("nope")
    assert client.alive  # a failed job leaves the worker running


def test_training_refuses_a_model_file_it_cannot_write_before_reading_the_pairs(tmp_path,
                                                                                 monkeypatch):
    # The Train/Curate docks' job found out only when it first saved, after reading every pair
    # and training a whole epoch; and it replaced an existing model without a word.
    from napari_skinseg import worker_jobs
    from napari_skinseg.worker_jobs import describe_error, job_train

    def forbidden(*args, **kwargs):
        raise AssertionError("training pairs read before the model file was checked")

    monkeypatch.setattr(worker_jobs, "samples_from_folders", forbidden)
    (tmp_path / "a_file").write_text("not a folder")
    (tmp_path / "old.pt").write_bytes(b"an earlier model")
    config = TrainConfig(size=64, epochs=1, device="cpu")
    for out, message in ((tmp_path / "a_file" / "m.pt", "a_file is a file, not a folder"),
                         (tmp_path / "old.pt", "old.pt exists; not replacing it")):
        with pytest.raises(OSError) as err:
            list(job_train(lambda: False, str(tmp_path), str(tmp_path), config, str(out)))
        assert message in describe_error(err.value)
    assert (tmp_path / "old.pt").read_bytes() == b"an earlier model"


def test_the_docks_learn_which_pairs_were_skipped_and_why(tmp_path):
    # The docks' training job said only "(1 skipped)"; the reasons and the odd-mask warning
    # went to the worker's log, which a person in napari never sees.
    from PIL import Image

    from napari_skinseg.reports import PairNotes
    from napari_skinseg.worker_jobs import job_train

    images_dir, masks_dir = write_synthetic_dataset(tmp_path / "d", 4, (64, 64), seed=6)
    Image.new("L", (32, 32)).save(masks_dir / "synth_006_0000_segmentation.png")  # wrong size
    odd = masks_dir / "synth_006_0001_segmentation.png"
    Image.fromarray((np.asarray(Image.open(odd)) > 0).astype(np.uint8) * 38).save(odd)
    config = TrainConfig(size=64, epochs=1, device="cpu")
    job = job_train(lambda: False, str(images_dir), str(masks_dir), config, str(tmp_path / "m.pt"))
    notes = next(item for item in job if not isinstance(item, str))
    job.close()  # no training needed
    assert isinstance(notes, PairNotes) and notes.pairs == 3
    assert len(notes.skipped) == 1 and notes.skipped[0].startswith("synth_006_0000")
    assert "32x32" in notes.skipped[0]
    assert any("synth_006_0001_segmentation.png" in w and "distinct values" in w
               for w in notes.warnings)
    text = notes.text()
    assert text.startswith("1 of 4 pairs skipped:") and "synth_006_0000" in text
    assert loads(dumps(notes)) == notes  # it crosses into napari's process


def test_retraining_never_validates_on_masks_accepted_unseen(tmp_path, tiny_model_path, tiny_config):
    # Curate's "Accept the rest" saves the model's own masks; as validation pairs they scored the
    # old model near 1, so a retrained model was (almost) never adopted.
    from napari_skinseg.image_io import read_image, read_mask
    from napari_skinseg.pairs import PairFolder
    from napari_skinseg.reports import PairNotes
    from napari_skinseg.worker_jobs import job_accept_as_curated, job_train

    source, truth = write_synthetic_dataset(tmp_path / "todo", 8, (64, 64), seed=12)
    folder = PairFolder(tmp_path / "curated")
    paths = sorted(source.glob("*.png"))
    for path in paths[:3]:  # corrected and saved by a person
        folder.write(path.stem, read_image(path), read_mask(truth / f"{path.stem}_segmentation.png"))
    # an image without its mask: a write the worker's end cut short; the pair is not there
    folder.images.mkdir(parents=True, exist_ok=True)
    (folder.image_path(paths[3].stem)).write_bytes(b"cut short")
    accepted = list(job_accept_as_curated(lambda: False, [str(p) for p in paths[3:]],
                                          str(folder.root), model=str(tiny_model_path)))
    assert [a["status"] for a in accepted] == ["accepted"] * 5
    assert read_image(folder.image_path(paths[3].stem)).shape == (64, 64, 3)
    assert folder.unreviewed_ids() == {p.stem for p in paths[3:]}
    job = job_train(lambda: False, str(folder.images), str(folder.masks), tiny_config,
                    str(tmp_path / "m.pt"), compare=True, baseline=str(tiny_model_path))
    items = []
    try:
        while True:
            items.append(next(job))
    except StopIteration as stop:
        summary = stop.value
    notes = next(i for i in items if isinstance(i, PairNotes))
    assert "5 of 8 pairs were accepted without review" in notes.text()
    assert summary.val_names and set(summary.val_names) <= {p.stem for p in paths[:3]}


def test_training_streams_reports_and_cancels_within_a_batch(client, tmp_path):
    images_dir, masks_dir = write_synthetic_dataset(tmp_path / "d", 6, (64, 64), seed=4)
    config = TrainConfig(size=64, epochs=50, batch_size=1, decoder_channels=(16, 8, 8, 8, 8),
                         device="cpu")
    job = client.submit("train", images_dir=str(images_dir), masks_dir=str(masks_dir),
                        config=config, out=str(tmp_path / "m.pt"), compare=True)
    stream, seen = job.stream(), []
    try:
        while True:
            item = next(stream)
            seen.append(item)
            if isinstance(item, EpochReport):
                job.cancel()
    except StopIteration as stop:
        summary = stop.value
    assert isinstance(summary, TrainingSummary) and summary.cancelled and summary.validated
    epochs = [i for i in seen if isinstance(i, EpochReport)]
    batches_after_cancel = [i for i in seen if isinstance(i, BatchProgress) and i.epoch > 1]
    assert len(epochs) == 1 and len(batches_after_cancel) <= 1  # stopped within one batch
    assert summary.baseline_name == BUNDLED_MODEL_NAME and 0 <= summary.baseline_dice <= 1


def test_a_killed_worker_fails_its_jobs_and_the_next_job_starts_a_new_one(tmp_path):
    c = WorkerClient()
    try:
        images_dir, masks_dir = write_synthetic_dataset(tmp_path / "d", 4, (64, 64), seed=5)
        job = c.submit("train", images_dir=str(images_dir), masks_dir=str(masks_dir),
                       config=TrainConfig(size=64, epochs=100, batch_size=1, device="cpu"),
                       out=str(tmp_path / "m.pt"))
        stream = job.stream()
        next(stream)
        c.kill()
        with pytest.raises(WorkerDied, match="was killed"):
            for _ in stream:
                pass
        assert c.call("devices")[:2] == ("auto", "cpu") and c.starts == 2
    finally:
        c.shutdown()


def test_only_plain_data_crosses_into_napari():
    assert loads(dumps(("event", 1, np.ones(3, np.float32))))[2].sum() == 3
    assert loads(dumps(TrainConfig(size=64))) == TrainConfig(size=64)
    with pytest.raises(pickle.UnpicklingError, match="refused"):
        loads(pickle.dumps(os.system))  # code a stranger's pickle would run
    import torch

    with pytest.raises(pickle.UnpicklingError, match="refused torch"):
        loads(pickle.dumps(torch.zeros(2)))  # would import torch into napari


def test_a_remote_worker_serves_a_client_that_connects_to_it():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    key = secrets.token_bytes(16)
    server = subprocess.Popen([sys.executable, "-m", "napari_skinseg.worker_process", "--listen",
                               f"127.0.0.1:{port}"], env={**os.environ, "SKINSEG_WORKER_KEY": key.hex()},
                              stderr=subprocess.PIPE, text=True)
    try:
        assert "listening" in server.stderr.readline()
        wrong = WorkerClient(remote=("127.0.0.1", port), authkey=b"wrong key")
        with pytest.raises(WorkerDied, match="cannot reach the model worker"):
            wrong.call("devices")
        c = WorkerClient(remote=("127.0.0.1", port), authkey=key)
        assert c.call("devices")[:2] == ("auto", "cpu")
        image, _ = make_synthetic_lesion((80, 80), seed=1)
        assert list(c.submit("predict", images=[("x", image)]).stream())[1][1].shape == (80, 80)
        c.shutdown()
        time.sleep(0.2)
        assert server.poll() is None  # the worker waits for the next session
    finally:
        server.kill()
        server.wait()


@pytest.fixture
def fake_worker(monkeypatch):
    """A client of a worker served by threads of this test, with a job that never stops by
    itself (``stuck``: one long image) and one that stops between steps (``steps``: training)."""
    monkeypatch.setattr(worker_client, "STOP_GRACE", 0.2)
    monkeypatch.setattr(worker_client, "PING_TIMEOUT", 2.0)
    release = threading.Event()

    def stuck(cancel):
        release.wait(60)
        return "late"
        yield

    def steps(cancel):
        n = 0
        while not cancel():
            yield n
            n += 1
            time.sleep(0.02)
        return f"stopped after {n}"

    def ping(cancel):
        return True
        yield

    jobs = {"stuck": stuck, "steps": steps, "ping": ping}
    key = secrets.token_bytes(16)
    listener = Listener(("127.0.0.1", 0), authkey=key)

    def accept():
        while True:
            try:
                conn = listener.accept()
            except OSError:
                return
            threading.Thread(target=worker_process.serve, args=(conn, jobs, str), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    client = WorkerClient(remote=listener.address, authkey=key)
    yield client
    release.set()
    client.shutdown()
    listener.close()


def test_a_job_that_cannot_stop_by_itself_is_ended_by_a_fresh_worker(fake_worker):
    job = fake_worker.submit("stuck")
    start = time.monotonic()
    job.stop()  # returns at once; the job ends within the grace time
    assert time.monotonic() - start < 0.5
    with pytest.raises(WorkerDied, match="restarted to cancel stuck"):
        job.result()
    assert fake_worker.call("ping") is True and fake_worker.starts == 2  # the next job works


def test_beside_another_job_a_stopped_job_is_given_up_alone(fake_worker):
    training = fake_worker.submit("steps")
    items = training.stream()
    next(items)
    job = fake_worker.submit("stuck")
    job.stop()
    with pytest.raises(JobCancelled):
        job.result()
    seen = next(items)
    time.sleep(0.3)
    assert next(items) > seen and fake_worker.starts == 1  # the training goes on, undisturbed
    training.stop(patient=True)  # stops between steps: its result comes back
    with pytest.raises(StopIteration, match="stopped after"):
        while True:
            next(items)


def test_a_ping_is_sent_without_waiting_and_answered_beside_a_running_job(fake_worker):
    # napari's watchdog pings from the GUI thread while jobs run: it may never block there.
    training = fake_worker.submit("steps")
    items = training.stream()
    next(items)
    ping = fake_worker.ping_nowait()
    assert ping.ended.wait(2) and ping.end_kind == "done"
    assert time.monotonic() - fake_worker.last_heard < 2
    holding, release = threading.Event(), threading.Event()

    def hold():  # as a worker being started holds it (up to START_TIMEOUT)
        with fake_worker._lock:
            holding.set()
            release.wait(10)

    threading.Thread(target=hold, daemon=True).start()
    holding.wait(2)
    start = time.monotonic()
    assert fake_worker.ping_nowait() is None and time.monotonic() - start < 0.1
    release.set()
    training.stop(patient=True)
    with pytest.raises(StopIteration):
        while True:
            next(items)
    fake_worker.restart()
    assert fake_worker.ping_nowait() is None  # no worker runs: nothing to ask


def test_a_stopped_worker_is_ended_when_a_job_is_cancelled_and_the_next_job_starts_one():
    # SIGSTOP: the worker neither dies nor answers; a request larger than the socket's buffer
    # (a photograph) used to block the sender, so not even the cancel could be sent.
    c = WorkerClient()
    try:
        c.ensure_started()
        os.kill(c.pid, signal.SIGSTOP)
        big = np.zeros((2000, 2000, 3), np.uint8)  # 12 MB
        start = time.monotonic()
        job = c.submit("predict", images=[("big", big)])
        job.stop(patient=True)  # even a job that would be waited for: the worker is silent
        assert time.monotonic() - start < 2  # neither waits on the stopped worker
        with pytest.raises(WorkerDied, match="stopped answering"):
            job.result()
        assert c.call("devices")[:2] == ("auto", "cpu") and c.starts == 2
    finally:
        c.kill()  # a stopped worker left by a failing test: SIGKILL ends it too
        c.shutdown()
