"""Audio in: reading and resampling, the paper's front end, training augmentation;
one signal contract ``f(signal, sample_rate)``."""
