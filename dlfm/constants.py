"""Names and paths that several rooms share; each is written here once and read everywhere else."""

DEFAULT_EXPERIMENT = "deeplense-fm"  # MLflow experiment of every stage run directly or by main
DATA_DIR = "data"  # where presets are simulated and cached, relative to the working directory
S3_CACHE_SUBDIR = "s3-cache"  # s3:// datasets are downloaded and verified under <DATA_DIR>/s3-cache, beside the presets
S3_CACHE_DIR = f"{DATA_DIR}/{S3_CACHE_SUBDIR}"
