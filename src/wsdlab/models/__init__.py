"""wsdlab.models"""
