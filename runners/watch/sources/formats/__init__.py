"""File formats the sources parse: TensorBoard event files (``tfevents``) and log dirs of them
(``tensorboard_dir``). Sources share these instead of importing each other."""
