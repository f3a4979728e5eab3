"""Ray Data stages of the evaluation job (``jobs.evaluate``): reading a sample's real and generated videos
(``samples``), measuring them in an actor pool (``measure``: features, motion, agent masks, apparent ego
motion) and the cache of real-video measurements (``cache``)."""
