"""wsdlab.data"""
