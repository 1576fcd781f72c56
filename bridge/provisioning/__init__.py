"""Provisioning of the carrier side: the Twilio Elastic SIP Trunk (:mod:`.twilio_trunk`)."""
