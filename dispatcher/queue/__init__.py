"""Call queues: who waits in which group's queue, in which order, and how long the wait will
probably be (the estimator).

Imports config/ and state/; sip/ (the router that holds callers), the API and the reports
import it.
"""
