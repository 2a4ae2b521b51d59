"""The three exchanges: civil-record update, identity confirmation, representation request.

Each exchange validates its submissions here before anything is stored or sent.
"""
