"""metarl: meta-reinforcement learning (MAML-TRPO) on navigation and locomotion task families.

Importing :mod:`metarl` registers the task families with gymnasium (``metarl/{family}-vN``,
:func:`metarl.envs.env_id`)."""

from metarl import envs as envs  # noqa: F401 - registers the gymnasium ids
