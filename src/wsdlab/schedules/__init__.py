"""wsdlab.schedules"""
