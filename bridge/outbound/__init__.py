"""Outbound calls that know who answered.

========================= ===================================================
module                    concern
========================= ===================================================
:mod:`.tone`              the voicemail beep: a single frequency, so long
:mod:`.amd`               sans-IO answering-machine detection and the wait
                          for the beep (frames and transcripts in, actions out)
:mod:`.gate`              the agent of an outbound call while the detector
                          listens: silent, then the conversation or the
                          voicemail message
:mod:`.dialing`           what a dial adds to the SIP leg: its options, the
                          agent an answered dial gets, the outcome of an
                          unanswered one
:mod:`.templates`         the callee's variables in greetings and messages
:mod:`.campaign`          campaigns: callees, pacing, windows, retries,
                          do-not-call, state in the records database
:mod:`.commands`          ``bridge campaign run | status``
========================= ===================================================
"""
