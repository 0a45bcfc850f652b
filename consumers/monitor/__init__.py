"""``mistnet monitor``: a live view of the jobs' events on ``mistnet.events``."""
