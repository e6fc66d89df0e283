"""User-facing errors: one clear line naming the problem and the fix."""


class DlfmError(Exception):
    """A problem the user can fix (bad param, missing or corrupt file, unknown stage).

    Entry points print ``str(error)`` as one line, without a traceback, and exit non-zero.
    The message names the problem and says how to fix it.
    """


class DatasetError(DlfmError):
    """A dataset directory or data file is missing, corrupt or inconsistent."""


class ConfigError(DlfmError):
    """A parameter value is out of range or unknown."""


class SecretInParams(ConfigError):
    """A param value carries a secret (a password in a URL); under ``mlflow run`` it is already stored as a param."""


class RegistryError(DlfmError):
    """A registry request names something that does not exist or cannot be done."""
