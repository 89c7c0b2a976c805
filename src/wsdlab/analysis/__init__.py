"""wsdlab.analysis"""
