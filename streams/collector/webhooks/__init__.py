"""Inbound webhooks: email events and CRM stage and deal changes from their vendors.

SendGrid and Mailgun (email), HubSpot (CRM): each authenticated the way its vendor signs
it and mapped to the Segment messages the trackers send (one mapping, one dead-letter path,
one answer).
"""
