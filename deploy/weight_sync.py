"""Weights from the learner to the rollout actors after every optimizer step (docs/design.md, "Weight sync"), two ways
behind one method, `push()` (`pipeline.weight_sync`):

  object_store  rank 0 exports the full state dict once into the Ray object store; every actor loads it from there
                between two rollouts (zero-copy on the actor's node, one transfer per remote node).
  broadcast     rank 0 broadcasts it bucket by bucket over a process group of its own with the actors (NCCL on GPUs,
                gloo on CPU: common/weight_bus.py); each actor receives on a thread of its own and loads the weights
                before its next rollout, so the learner never waits for a rollout to finish.

The sync owns what the actors should hold: `version` (the last version pushed; 0 = the initial weights) and
`restore(actor)`, which gives an actor that died and was restarted by Ray the current weights before it samples again
(RolloutFleet.collect calls it); on the bus that means a new group generation with every member and the same version
sent again. The trainer passes the sync to the fleet's calls (`version=`, `weights=`); nobody else writes them.
"""
from __future__ import annotations

import logging
import time

import ray
from ray.exceptions import RayActorError, RayTaskError

from common.config import RunConfig
from deploy.fleet import RolloutFleet
from learner.group import LearnerGroup

log = logging.getLogger(__name__)
BROADCAST_ATTEMPTS = 3


class ObjectStoreSync:
    def __init__(self, learner: LearnerGroup, fleet: RolloutFleet, *, version: int = 0) -> None:
        self.learner, self.fleet = learner, fleet
        self.version = version  # the last version pushed to the actors
        self._state: ray.ObjectRef | None = None  # ... and its state dict in the object store

    def push(self, *, wait: bool) -> int:
        """Export once, queue the load on every actor; `wait` (sync mode): until every actor holds it."""
        state_ref, version = self.learner.export_weights()
        self._state, self.version = state_ref, version
        pushes = self.fleet.push_weights(state_ref, version)
        if wait:
            for actor, ref in enumerate(pushes):
                try:
                    ray.get(ref)
                except RayActorError:  # without this, a death during the weight push would end the run
                    log.warning("rollout-%d died while loading weights; waiting for its restart", actor)
                    self.fleet.wait_alive(actor)
                    self.restore(actor)
        return version

    def restore(self, actor: int) -> None:
        """A restarted actor starts from the initial weights: give it the current ones."""
        if self._state is not None:
            ray.get(self.fleet.actors[actor].set_weights.remote(self._state, self.version))


class BroadcastSync:
    def __init__(self, cfg: RunConfig, learner: LearnerGroup, fleet: RolloutFleet, *, version: int = 0) -> None:
        self.learner, self.fleet = learner, fleet
        self.version = version  # the last version every actor has staged
        self.timeout_s = cfg.pipeline.weight_sync_timeout_s
        self.signature = learner.weight_signature()
        self.generation = -1  # bumped by every join: after the first one it counts the rebuilds
        self._join()

    def _join(self) -> None:
        """Every member joins a new generation of the group: learner rank 0 = bus rank 0, actor i = bus rank i + 1."""
        self.generation += 1
        size = len(self.fleet.actors) + 1
        ray.get([self.learner.join_weight_bus(self.generation, size)] + [
            actor.join_weight_bus.remote(self.learner.store_address, i + 1, size, self.generation, self.signature)
            for i, actor in enumerate(self.fleet.actors)])

    def push(self, *, wait: bool = True) -> int:
        """Broadcast the new version and wait until every actor has staged it (that never waits for a rollout, so
        `wait` makes no difference here)."""
        return self._send(resend=False)

    def restore(self, actor: int) -> None:
        """A restarted actor (bus-less) needs the current weights: rebuild the group, send the same version again."""
        self._recover(f"rollout-{actor} restarted")
        if self.version > 0:  # before the first push every actor holds the initial weights already
            self._send(resend=True)

    def _send(self, *, resend: bool) -> int:
        for attempt in range(BROADCAST_ATTEMPTS):
            senders = [self.learner.resend_weights()] if resend else self.learner.broadcast_weights()
            receivers = [actor.receive_weights.remote() for actor in self.fleet.actors]
            try:
                version = ray.get(senders[0])[0]
                ray.get(senders[1:] + receivers)
                self.version = version
                return version
            except (RayActorError, RayTaskError) as err:
                # let every member finish or time out before the group is rebuilt (a member still inside a
                # collective of the broken generation would not join the new one)
                ray.wait(senders + receivers, num_returns=len(senders + receivers), timeout=self.timeout_s + 30)
                self._recover(f"broadcast failed ({type(err).__name__}: {str(err).splitlines()[0][:200]})")
                resend = True  # the learner ranks have gathered already; rank 0 keeps what it sent
        raise RuntimeError(f"weight broadcast failed {BROADCAST_ATTEMPTS} times; see the actors' logs")

    def _recover(self, reason: str) -> None:
        log.warning("weight bus: %s; waiting for every actor, then rebuilding the group", reason)
        start = time.monotonic()
        for i in range(len(self.fleet.actors)):
            self.fleet.wait_alive(i)
        self._join()
        log.warning("weight bus: generation %d after %.1fs", self.generation, time.monotonic() - start)


def weight_sync(cfg: RunConfig, learner: LearnerGroup, fleet: RolloutFleet) -> ObjectStoreSync | BroadcastSync:
    """The sync of `pipeline.weight_sync`. A new one (a rebuilt learner group) starts at version 0 and ends up at the
    version of its first push."""
    if cfg.pipeline.weight_sync == "broadcast":
        return BroadcastSync(cfg, learner, fleet)
    return ObjectStoreSync(learner, fleet)
