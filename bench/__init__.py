"""Load benchmark for geventchat: ``python -m bench --help``.

Many simulated clients in one room; senders send numbered, time-stamped lines and every
receiver checks that it got each of them exactly once and in order. See bench/RESULTS.md.
"""
